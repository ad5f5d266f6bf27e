"""Bounds-checked reading and range-checked writing of big-endian fields.

Every decoder reads through `Reader`, so running off the end of a buffer or meeting a length
field that lies becomes a `DecodeError`, never an IndexError or struct.error. Reads are offset
based over a memoryview: decoding is linear in the input size (no repeated slicing copies).
"""

from __future__ import annotations

import struct

from lisp.errors import DecodeError, EncodeError

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


class Reader:
    """A cursor over bytes. `end` bounds the readable region (for length-delimited sub-parts)."""

    __slots__ = ("_data", "_view", "end", "pos")

    def __init__(self, data: bytes | memoryview, pos: int = 0, end: int | None = None) -> None:
        # Hold real bytes so searches (`find`) run in C over the original buffer.
        self._data = data if isinstance(data, bytes) else bytes(data)
        self._view = memoryview(self._data)
        self.pos = pos
        self.end = len(self._view) if end is None else end
        if not 0 <= pos <= self.end <= len(self._view):
            raise DecodeError(f"bad region {pos}..{end} of a {len(self._view)}-byte buffer")

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def _need(self, n: int, what: str) -> int:
        start = self.pos
        if n < 0 or start + n > self.end:
            raise DecodeError(
                f"truncated {what}: need {n} bytes at offset {start}, have {self.end - start}"
            )
        self.pos = start + n
        return start

    def u8(self, what: str = "field") -> int:
        start = self._need(1, what)
        return self._view[start]

    def u16(self, what: str = "field") -> int:
        start = self._need(2, what)
        return int(_U16.unpack_from(self._view, start)[0])

    def u32(self, what: str = "field") -> int:
        start = self._need(4, what)
        return int(_U32.unpack_from(self._view, start)[0])

    def u64(self, what: str = "field") -> int:
        start = self._need(8, what)
        return int(_U64.unpack_from(self._view, start)[0])

    def take(self, n: int, what: str = "field") -> bytes:
        start = self._need(n, what)
        return bytes(self._view[start : start + n])

    def rest(self) -> bytes:
        return self.take(self.remaining, "rest")

    def sub(self, n: int, what: str) -> Reader:
        """A reader over the next `n` bytes; this reader skips past them."""
        start = self._need(n, what)
        return Reader(self._data, start, start + n)

    def find(self, needle: bytes) -> int:
        """Offset of `needle` from the cursor within the readable region, or -1."""
        at = self._data.find(needle, self.pos, self.end)
        return at - self.pos if at >= 0 else -1


def check_uint(value: int, bits: int, what: str) -> int:
    """Strict on send: a field that does not fit its width is an EncodeError naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise EncodeError(f"{what}={value!r} does not fit in {bits} bits")
    return value


def u8(value: int, what: str = "field") -> bytes:
    return bytes((check_uint(value, 8, what),))


def u16(value: int, what: str = "field") -> bytes:
    return _U16.pack(check_uint(value, 16, what))


def u32(value: int, what: str = "field") -> bytes:
    return _U32.pack(check_uint(value, 32, what))


def u64(value: int, what: str = "field") -> bytes:
    return _U64.pack(check_uint(value, 64, what))
