"""Capture LISP data packets leaving an xTR, and send them again: a replay attacker for lab tests.

replay.py capture --iface eth1 --dst 10.77.0.12 --count 5 --out pkts.json [--timeout 10]
    Sniffs (AF_PACKET) the IPv4/UDP frames leaving `--iface` towards `--dst` port 4341 and
    writes the UDP payloads of the first `--count` as hex to `--out` (JSON list). Prints
    "ready" once the socket listens, so a caller can start the traffic after that.
replay.py send --src 10.77.0.11 --dst 10.77.0.12 --in pkts.json [--times 3] [--flip N]
    Sends every payload `--times` times from a UDP socket bound to `--src` (any port; the ETR
    keys by source address) to `--dst`:4341. `--flip N` XORs byte N of each payload with 0x01
    first (tampering). Prints the number of datagrams sent.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time
from pathlib import Path

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
DATA_PORT = 4341


def udp_payload(frame: bytes, dst: bytes) -> bytes | None:
    """The UDP payload of an IPv4 frame to `dst`:4341 (unfragmented), else None."""
    if len(frame) < 42 or int.from_bytes(frame[12:14], "big") != ETH_P_IP:
        return None
    ihl = (frame[14] & 0x0F) * 4
    if frame[23] != 17 or frame[30:34] != dst or int.from_bytes(frame[20:22], "big") & 0x3FFF:
        return None
    udp = 14 + ihl
    if int.from_bytes(frame[udp + 2 : udp + 4], "big") != DATA_PORT:
        return None
    end = 14 + int.from_bytes(frame[16:18], "big")
    return frame[udp + 8 : end]


def capture(args: argparse.Namespace) -> int:
    dst = socket.inet_aton(args.dst)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((args.iface, 0))
    print("ready", flush=True)
    payloads: list[str] = []
    deadline = time.monotonic() + args.timeout
    while len(payloads) < args.count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            break
        frame, address = sock.recvfrom(65536)
        if address[2] != PACKET_OUTGOING:
            continue
        payload = udp_payload(frame, dst)
        if payload is not None:
            payloads.append(payload.hex())
    Path(args.out).write_text(json.dumps(payloads))
    print(f"captured {len(payloads)}", flush=True)
    return 0 if len(payloads) == args.count else 1


def send(args: argparse.Namespace) -> int:
    payloads = [bytes.fromhex(p) for p in json.loads(Path(args.input).read_text())]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.src, 0))
    sent = 0
    for payload in payloads:
        if args.flip is not None:
            tampered = bytearray(payload)
            tampered[args.flip] ^= 0x01
            payload = bytes(tampered)
        for _ in range(args.times):
            sock.sendto(payload, (args.dst, DATA_PORT))
            sent += 1
    print(f"sent {sent}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    cap = sub.add_parser("capture")
    cap.add_argument("--iface", required=True)
    cap.add_argument("--dst", required=True)
    cap.add_argument("--count", type=int, required=True)
    cap.add_argument("--out", required=True)
    cap.add_argument("--timeout", type=float, default=10.0)
    snd = sub.add_parser("send")
    snd.add_argument("--src", required=True)
    snd.add_argument("--dst", required=True)
    snd.add_argument("--in", dest="input", required=True)
    snd.add_argument("--times", type=int, default=1)
    snd.add_argument("--flip", type=int)
    args = parser.parse_args()
    return capture(args) if args.verb == "capture" else send(args)


if __name__ == "__main__":
    sys.exit(main())
