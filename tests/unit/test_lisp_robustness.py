"""Robustness: every decoder, fed hundreds of thousands of random and mutated inputs, raises
nothing but `lisp.DecodeError`, and its work stays linear in the input size.

The bulk fuzzing is a seeded `random` loop over mutations of valid encodings (the sample corpus and
the lispers.net captures): deterministic, counted, fast. Hypothesis adds structure-aware fuzzing
on top. Linearity is asserted on a deterministic operation count (function calls seen by
`sys.setprofile`, plus the bytes the C-level searches and copies of `Reader` touch), never on
wall-clock time.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lisp import (
    AfiList,
    DataHeader,
    DecodeError,
    DistinguishedName,
    EidRecord,
    ElpHop,
    EncapsulatedControl,
    EncodeError,
    ExplicitLocatorPath,
    InfoMessage,
    MapNotify,
    MapNotifyAck,
    MapRegister,
    MapReply,
    MapRequest,
    NatTraversal,
    NoAddress,
    RequestRecord,
    RlocRecord,
    SecurityKey,
    decode_control,
)
from lisp.address import MAX_ADDRESS_DEPTH, decode_address, encode_address
from lisp.wire import Reader
from tests import lisp_strategies as s

CLASSES: dict[int, Any] = {
    1: MapRequest,
    2: MapReply,
    3: MapRegister,
    4: MapNotify,
    5: MapNotifyAck,
    7: InfoMessage,
    8: EncapsulatedControl,
}


def _decode_address(data: bytes) -> Any:
    return decode_address(Reader(data))


DECODERS: dict[str, Callable[[bytes], Any]] = {
    "decode_control": decode_control,
    **{cls.__name__: cls.decode for cls in CLASSES.values()},
    "DataHeader": DataHeader.decode,
    "decode_address": _decode_address,
}

# --- corpus and mutations -------------------------------------------------------------------------


def _message_seeds() -> dict[int, list[bytes]]:
    """Valid encodings grouped by message type (every type, every flag, every LCAF)."""
    seeds: dict[int, list[bytes]] = {t: [] for t in CLASSES}
    values = [m for m in s.sample_messages() if not isinstance(m, DataHeader)]
    for raw in [m.encode() for m in values] + list(s.GOLDEN.values()):
        seeds[raw[0] >> 4].append(raw)
    assert all(seeds.values()), "the corpus misses a message type"
    return seeds


def _address_seeds() -> list[bytes]:
    return [encode_address(a) for a in s.sample_addresses()]


def _lcaf_offsets(data: bytes | bytearray) -> list[int]:
    out, at = [], data.find(b"\x40\x03")
    while at >= 0:
        out.append(at)
        at = data.find(b"\x40\x03", at + 1)
    return out


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """1-4 random edits: bit flips, byte sets, truncation, insertion, deletion, splicing,
    length/count-field inflation (LCAF Length, auth length, record and locator counts)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        n = len(buf)
        if op == 0 and n:  # flip one bit
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # set one byte
            buf[rng.randrange(n)] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif op == 2:  # truncate
            del buf[rng.randrange(n + 1) :]
        elif op == 3:  # insert random bytes
            at = rng.randrange(n + 1)
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op == 4 and n:  # delete a span
            at = rng.randrange(n)
            del buf[at : at + rng.randint(1, 16)]
        elif op == 5:  # splice in a piece of another seed
            other = rng.choice(pool)
            a = rng.randrange(len(other) + 1)
            piece = other[a : a + rng.randint(1, 64)]
            at = rng.randrange(n + 1)
            buf[at : at + rng.randint(0, 8)] = piece
        elif op == 6:  # inflate (or shrink) an LCAF Length field
            offsets = _lcaf_offsets(buf)
            if offsets:
                at = rng.choice(offsets) + 6
                old = int.from_bytes(buf[at : at + 2], "big")
                new = rng.choice((0xFFFF, old + 1, old + rng.randint(1, 64), max(old - 1, 0), 0))
                buf[at : at + 2] = (new & 0xFFFF).to_bytes(2, "big")
        elif op == 7 and n >= 16:  # inflate the auth data length / key-id / alg fields
            at = rng.choice((12, 13, 14))
            width = 2 if at == 14 else 1
            buf[at : at + width] = rng.randrange(1 << (8 * width)).to_bytes(width, "big")
        elif op == 8 and n >= 4:  # record count, IRC, or a locator count / mask-len byte
            at = rng.choice((2, 3, 3, min(16, n - 1), rng.randrange(n)))
            buf[at] = rng.choice((0xFF, 0x1F, (buf[at] + 1) & 0xFF, rng.randrange(256)))
        elif op == 9 and n:  # rewrite the type nibble: parse one message as another
            buf[0] = (rng.choice((1, 2, 3, 4, 5, 6, 7, 8, 9, 15)) << 4) | (buf[0] & 0x0F)
    return bytes(buf)


class Failures:
    """Collects unexpected exceptions (decoder name, exception, input) instead of stopping."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def run(self, name: str, fn: Callable[[bytes], Any], data: bytes) -> Any:
        try:
            return fn(data)
        except DecodeError as exc:
            # decode_control turns a stray ValueError & co of a class decoder into a DecodeError
            # "from" it (defence in depth); the class decoder itself must not raise one.
            if exc.__cause__ is not None and len(self.items) < 20:
                cause = exc.__cause__
                self.items.append(f"{name}: {type(cause).__name__}: {cause} <- {data.hex()}")
            return None
        except Exception as exc:
            if len(self.items) < 20:
                self.items.append(f"{name}: {type(exc).__name__}: {exc} <- {data.hex()}")
            return None


def _check_reencode(value: Any, failures: Failures) -> bool:
    """A decoded value either re-encodes or raises EncodeError (strict on send). If it encodes,
    that encoding is canonical: it decodes back to the value and re-encodes to the same bytes.

    One lenient-decode case is normalised rather than preserved: auth data whose length does not
    match the algorithm may decode as b"", which the encoder reads as "zeros, to be signed"."""
    try:
        raw = value.encode()
    except EncodeError:
        return False
    except Exception as exc:
        failures.items.append(f"encode: {type(exc).__name__}: {exc} <- {value!r}")
        return False
    decode = DataHeader.decode if isinstance(value, DataHeader) else decode_control
    again = decode(raw)
    placeholder = getattr(value, "auth_data", None) == b"" and getattr(value, "alg_id", 0) != 0
    if (again != value and not placeholder) or again.encode() != raw:
        failures.items.append(f"decode(encode(x)) != x for {value!r}")
    return True


# --- the counted, seeded loop ---------------------------------------------------------------------

ROUNDS = 205_000
MIN_INPUTS = 200_000


@pytest.mark.fuzz
def test_seeded_mutation_fuzz_raises_only_decode_error() -> None:
    rng = random.Random(0x115B)  # fixed seed: the run is reproducible
    seeds = _message_seeds()
    pool = [raw for group in seeds.values() for raw in group]
    addresses = _address_seeds()
    types = sorted(seeds)
    fed: Counter[str] = Counter()
    deep: Counter[str] = Counter()  # inputs that got past a class decoder's type check
    reencoded = 0
    failures = Failures()
    for i in range(ROUNDS):
        if i % 10 == 9:  # plain random bytes, often with a valid type nibble
            data = rng.randbytes(rng.randrange(300))
            if data and rng.random() < 0.8:
                data = bytes(((rng.choice(types) << 4) | (data[0] & 0x0F),)) + data[1:]
        else:
            data = mutate(rng, rng.choice(seeds[rng.choice(types)]), pool)
        decoded = failures.run("decode_control", decode_control, data)
        fed["decode_control"] += 1
        if decoded is not None and i % 4 == 0 and _check_reencode(decoded, failures):
            reencoded += 1
        for msg_type, cls in CLASSES.items():
            fed[cls.__name__] += 1
            if data and data[0] >> 4 == msg_type:
                # decode_control just ran exactly `cls.decode(data)`, and a non-DecodeError
                # from it shows up as the cause (see Failures.run): no need to run it twice.
                deep[cls.__name__] += 1
            else:
                failures.run(cls.__name__, cls.decode, data)
        header = failures.run("DataHeader", DataHeader.decode, data[: rng.randrange(12)])
        fed["DataHeader"] += 1
        if header is not None and i % 4 == 0:
            _check_reencode(header, failures)
        address = mutate(rng, rng.choice(addresses), addresses)
        failures.run("decode_address", _decode_address, address)
        fed["decode_address"] += 1
        assert len(failures.items) < 20, "\n".join(failures.items)

    assert failures.items == [], "\n".join(failures.items)
    assert set(fed) == set(DECODERS)
    assert min(fed.values()) >= MIN_INPUTS, fed
    assert sum(fed.values()) >= 10 * MIN_INPUTS
    for name in (cls.__name__ for cls in CLASSES.values()):
        assert deep[name] >= 15_000, (name, deep[name])  # each parses plenty of its own type
    assert reencoded >= 5_000  # many mutants are still valid messages: the loop is not vacuous


# --- hypothesis-driven fuzzing --------------------------------------------------------------------

FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _only_decode_errors(data: bytes) -> None:
    failures = Failures()
    for name, fn in DECODERS.items():
        failures.run(name, fn, data)
    assert failures.items == [], "\n".join(failures.items)


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    _only_decode_errors(data)


@FUZZ
@given(st.sampled_from(sorted(CLASSES)), st.binary(max_size=400))
def test_random_bodies_of_every_type_raise_only_decode_error(msg_type: int, body: bytes) -> None:
    _only_decode_errors(bytes((msg_type << 4,)) + body)


edits = st.lists(
    st.tuples(st.sampled_from(("set", "insert", "delete", "cut")), st.integers(0, 2000), s.u8s),
    min_size=1,
    max_size=6,
)


def _apply(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, where, value in ops:
        at = where % (len(buf) + 1)
        if op == "set" and at < len(buf):
            buf[at] = value
        elif op == "insert":
            buf[at:at] = bytes((value,)) * (1 + value % 8)
        elif op == "delete":
            del buf[at : at + 1 + value % 16]
        elif op == "cut":
            del buf[at:]
    return bytes(buf)


@FUZZ
@given(s.control_messages, edits)
def test_mutated_messages_raise_only_decode_error(message: Any, ops: list[Any]) -> None:
    _only_decode_errors(_apply(message.encode(), ops))


@FUZZ
@given(s.addresses(3), edits)
def test_mutated_addresses_raise_only_decode_error(address: Any, ops: list[Any]) -> None:
    _only_decode_errors(_apply(encode_address(address), ops))


@FUZZ
@given(s.data_headers(), st.binary(min_size=8, max_size=16))
def test_any_data_header_bytes_decode(header: DataHeader, other: bytes) -> None:
    raw = header.encode()
    for cut in range(len(raw)):
        with pytest.raises(DecodeError):
            DataHeader.decode(raw[:cut])
    assert DataHeader.decode(raw + other) == header  # the inner packet is not its business
    assert isinstance(DataHeader.decode(other), DataHeader)  # any 8 bytes are some header


# --- linear time ----------------------------------------------------------------------------------


class OpCounter:
    """Deterministic work meter: Python and C function calls (sys.setprofile), plus the bytes
    that Reader's C-level searches scan and its copies copy (one call, many bytes)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ops = 0
        real_find, real_take = Reader.find, Reader.take

        def find(reader: Reader, needle: bytes) -> int:
            at = real_find(reader, needle)
            self.ops += (at + len(needle)) if at >= 0 else reader.remaining
            return at

        def take(reader: Reader, n: int, what: str = "field") -> bytes:
            self.ops += max(n, 0)
            return real_take(reader, n, what)

        monkeypatch.setattr(Reader, "find", find)
        monkeypatch.setattr(Reader, "take", take)

    def count(self, fn: Callable[[bytes], Any], data: bytes) -> tuple[int, bool]:
        """(operations, whether it decoded) for one call."""
        self.ops = 0

        def profile(frame: Any, event: str, arg: Any) -> None:
            if event in ("call", "c_call"):
                self.ops += 1

        previous = sys.getprofile()
        sys.setprofile(profile)
        try:
            fn(data)
            ok = True
        except DecodeError:
            ok = False
        finally:
            sys.setprofile(previous)
        return self.ops, ok


V4 = IPv4Address("10.77.0.2")
V6 = IPv6Address("2001:db8::2")


def _reply(records: tuple[EidRecord, ...]) -> bytes:
    return MapReply(1, records).encode()


def _one_rloc(address: Any) -> bytes:
    return _reply((EidRecord(V4, 24, (RlocRecord(address),)),))


def _nested_raw(depth: int) -> bytes:
    """`depth` AFI-Lists nested by hand (the encoder refuses more than the bound), as an RLOC."""
    raw = encode_address(V4)
    for _ in range(depth):
        raw = b"\x40\x03\x00\x00\x01\x00" + len(raw).to_bytes(2, "big") + raw
    head = _one_rloc(V4)
    return head[: -len(encode_address(V4))] + raw


def _unterminated_dn(n: int) -> bytes:
    head = _one_rloc(V4)
    return head[: -len(encode_address(V4))] + b"\x00\x11" + b"a" * (6 * n)


def _many_dns(n: int) -> bytes:
    return _one_rloc(AfiList(tuple(DistinguishedName(f"h{i:05d}") for i in range(n))))


# name -> (builder of an input of "size" n, decoder, n, must it decode? (None: either way))
LINEAR_CASES: dict[str, tuple[Callable[[int], bytes], Callable[[bytes], Any], int, bool | None]] = {
    "AFI-List of IPv4": (lambda n: _one_rloc(AfiList((V4,) * n)), decode_control, 300, True),
    "AFI-List of DNs": (_many_dns, decode_control, 200, True),
    "Map-Reply records": (
        lambda n: _reply((EidRecord(V6, 64, (RlocRecord(V4), RlocRecord(V6))),) * n),
        MapReply.decode,
        30,
        True,
    ),
    "Map-Register records": (
        lambda n: MapRegister(1, (EidRecord(V4, 32, (RlocRecord(V4),)),) * n).encode(),
        decode_control,
        30,
        True,
    ),
    "Map-Request ITR-RLOCs and records": (
        lambda n: MapRequest(1, (V6,) * (n // 8), (RequestRecord(V4, 32),) * n).encode(),
        MapRequest.decode,
        30,
        True,
    ),
    "ELP hops": (
        lambda n: _one_rloc(ExplicitLocatorPath((ElpHop(V6, True),) * n)),
        decode_control,
        150,
        True,
    ),
    "security keys": (
        lambda n: _one_rloc(SecurityKey(2, (bytes(32),) * n, V4)),
        decode_control,
        30,
        True,
    ),
    "Info-Reply RTR list (read to the end)": (
        lambda n: InfoMessage(
            1, True, payload=NatTraversal(0, 1, V4, NoAddress(), DistinguishedName("vm"), (V4,) * n)
        ).encode(),
        InfoMessage.decode,
        300,
        True,
    ),
    "ECM inner message": (
        lambda n: EncapsulatedControl(V4, V4, _one_rloc(AfiList((V4,) * n))).encode(),
        EncapsulatedControl.decode,
        300,
        True,
    ),
    "LCAFs nested past the bound (refused)": (_nested_raw, decode_control, 40, False),
    "DN without its NUL (refused)": (_unterminated_dn, decode_control, 300, False),
    "truncated 255-record Map-Reply (refused)": (
        lambda n: _reply((EidRecord(V4, 24, (RlocRecord(V4),)),) * 255)[: 40 * n],
        MapReply.decode,
        20,
        False,
    ),
    "random bytes": (lambda n: random.Random(n).randbytes(40 * n), decode_control, 40, None),
}


@pytest.mark.parametrize("name", list(LINEAR_CASES))
def test_decode_work_is_linear_in_input_size(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    build, decoder, n, decodes = LINEAR_CASES[name]
    small, big = build(n), build(8 * n)
    assert len(big) >= 6 * len(small), (len(small), len(big))  # really ~8x the input
    meter = OpCounter(monkeypatch)
    ops_small, ok_small = meter.count(decoder, small)
    ops_big, ok_big = meter.count(decoder, big)
    if decodes is not None:
        assert (ok_small, ok_big) == (decodes, decodes)
    ratio = ops_big / ops_small
    assert ratio <= 10, f"{name}: 8x input cost {ratio:.1f}x the work ({ops_small} -> {ops_big})"
    if decodes:  # the meter sees the growth (a constant count would make the bound vacuous)
        assert ratio >= 4, f"{name}: work did not grow with the input ({ops_small} -> {ops_big})"


def test_nesting_is_refused_at_the_bound() -> None:
    decode_control(_nested_raw(MAX_ADDRESS_DEPTH))
    with pytest.raises(DecodeError, match="nested"):
        decode_control(_nested_raw(MAX_ADDRESS_DEPTH + 1))


def test_op_counter_detects_quadratic_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The meter is not blind: a deliberately quadratic scan is measured as ~64x for 8x input."""

    def quadratic(data: bytes) -> None:
        for start in range(len(data)):
            Reader(data, start).find(b"\xff")

    meter = OpCounter(monkeypatch)
    ops_small, _ = meter.count(quadratic, bytes(200))
    ops_big, _ = meter.count(quadratic, bytes(1600))
    assert ops_big / ops_small > 30
