"""Data-plane crypto benchmark: seal+open of 1400-byte packets, both suites, side by side.

Run from the repository root: `python3 bench/crypto_bench.py [--seconds 0.5] [--size 1400]`
(about 10 s). Machines are noisy, so each figure is printed next to references measured in the
same run:

* bare AEAD encrypt / decrypt: one `AESGCM.encrypt` (or ChaCha20Poly1305) call per packet with a
  fixed nonce, no framing: the floor any Python data plane using `cryptography` sits on;
* PacketCipher seal / open: our framing (header AAD, salt||counter IV, slicing on open);
* the Python data path's per-packet crypto: seal with a running counter, open, replay window.

Each rate is the best of several passes. "Gbit/s" counts inner bytes (one direction), for a pass
that does only that operation; the seal+open line is the rate of doing both (one packet crossing
an ITR and an ETR on one core). "per-CPU" divides by CPU time actually received (process time),
which removes CPU steal on shared machines.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from lisp.crypto import (
    CS_AES128_GCM,
    CS_CHACHA20_POLY1305,
    EcdhKeyPair,
    PacketCipher,
    ReplayWindow,
    derive_data_key,
)
from lisp.data_header import DataHeader

HEADER = DataHeader(nonce=0xABCDEF, instance_id=0).encode()
BATCH = 2000


def measure(loop: Callable[[int], object], seconds: float) -> tuple[float, float]:
    """(ops/s wall, ops/s per CPU second), best of passes lasting about `seconds` in total."""
    loop(200)  # warm up
    best_wall = best_cpu = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        w0, c0 = time.perf_counter(), time.process_time()
        loop(BATCH)
        w1, c1 = time.perf_counter(), time.process_time()
        best_wall = max(best_wall, BATCH / max(w1 - w0, 1e-9))
        best_cpu = max(best_cpu, BATCH / max(c1 - c0, 1e-9))
        if w1 >= deadline:
            return best_wall, best_cpu


def loops(suite: int, size: int) -> dict[str, Callable[[int], object]]:
    inner = os.urandom(size)
    key = derive_data_key(EcdhKeyPair.generate(), EcdhKeyPair.generate().public, suite)
    bare = AESGCM(key) if suite == CS_AES128_GCM else ChaCha20Poly1305(key)
    nonce = os.urandom(12)
    ciphertext = bare.encrypt(nonce, inner, HEADER)
    cipher = PacketCipher(suite, key, 1)
    sealed = cipher.seal(HEADER, inner, 1)

    def bare_encrypt(n: int) -> None:
        enc = bare.encrypt
        for _ in range(n):
            enc(nonce, inner, HEADER)

    def bare_decrypt(n: int) -> None:
        dec = bare.decrypt
        for _ in range(n):
            dec(nonce, ciphertext, HEADER)

    counter = [0]

    def cipher_seal(n: int) -> None:
        seal = cipher.seal
        c = counter[0]
        for i in range(c, c + n):
            seal(HEADER, inner, i)
        counter[0] = c + n

    def cipher_open(n: int) -> None:
        open_ = cipher.open
        for _ in range(n):
            open_(sealed)

    window = ReplayWindow()
    wcount = [0]

    def replay_window(n: int) -> None:
        accept = window.accept
        c = wcount[0]
        for i in range(c, c + n):
            accept(i)
        wcount[0] = c + n

    # What the Python data path does per packet: seal with a counter, open, check the window.
    path_window = ReplayWindow()
    path_counter = [0]

    def path_seal(n: int) -> None:
        seal = cipher.seal
        c = path_counter[0]
        for i in range(c + 1, c + 1 + n):
            seal(HEADER, inner, i)
        path_counter[0] = c + n

    def path_seal_open(n: int) -> None:
        seal, open_, accept = cipher.seal, cipher.open, path_window.accept
        c = path_counter[0]
        for i in range(c + 1, c + 1 + n):
            accept(open_(seal(HEADER, inner, i))[0])
        path_counter[0] = c + n

    def cipher_seal_open(n: int) -> None:
        seal, open_ = cipher.seal, cipher.open
        c = counter[0]
        for i in range(c, c + n):
            open_(seal(HEADER, inner, i))
        counter[0] = c + n

    def bare_seal_open(n: int) -> None:
        enc, dec = bare.encrypt, bare.decrypt
        for _ in range(n):
            dec(nonce, enc(nonce, inner, HEADER), HEADER)

    return {
        "bare AEAD encrypt": bare_encrypt,
        "PacketCipher.seal": cipher_seal,
        "seal with a running counter": path_seal,
        "bare AEAD decrypt": bare_decrypt,
        "PacketCipher.open": cipher_open,
        "ReplayWindow.accept (no crypto)": replay_window,
        "bare encrypt+decrypt": bare_seal_open,
        "PacketCipher seal+open": cipher_seal_open,
        "seal+open+replay window (Python path)": path_seal_open,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per measurement")
    parser.add_argument("--size", type=int, default=1400, help="inner packet bytes")
    args = parser.parse_args()
    names = {CS_AES128_GCM: "CS5 AES-128-GCM", CS_CHACHA20_POLY1305: "CS6 ChaCha20-Poly1305"}
    results: dict[int, dict[str, tuple[float, float]]] = {}
    for suite in names:
        results[suite] = {
            name: measure(loop, args.seconds) for name, loop in loops(suite, args.size).items()
        }
    print(f"{args.size}-byte inner packets; best of passes of {BATCH}; Gbit/s of inner bytes")
    header = f"{'':34}"
    for suite in names:
        header += f" | {names[suite]:^36}"
    print(header)
    sub = f"{'operation':34}" + " | {:>9} {:>6} {:>7} {:>10}".format(
        "pkt/s", "us", "Gbit/s", "Gb/s/CPU"
    ) * len(names)
    print(sub)
    print("-" * len(sub))
    for name in results[CS_AES128_GCM]:
        line = f"{name:34}"
        for suite in names:
            wall, cpu = results[suite][name]
            bits = args.size * 8 / 1e9
            line += f" | {wall:9.0f} {1e6 / wall:6.2f} {wall * bits:7.2f} {cpu * bits:10.2f}"
        print(line)


if __name__ == "__main__":
    main()
