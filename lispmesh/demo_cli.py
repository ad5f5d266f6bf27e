"""`lispmesh demo`: show the protocol library at work, checked by tshark as an outside decoder.

Builds a signed Map-Register and a Map-Reply carrying an RFC 8061 key, prints them decoded by
lisp/, then has tshark decode the very same bytes. (The live-lab demo replaces this once the
overlay and the controller exist.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from ipaddress import IPv4Address, ip_address
from pathlib import Path

from lisp import (
    AfiList,
    EidRecord,
    InstanceId,
    MapRegister,
    MapReply,
    RlocRecord,
    SecurityKey,
    decode_control,
)
from lisp.auth import sign, verify
from lispmesh.pcap import ipv4_udp, write_pcap

DEMO_KEY = b"demo-site-key"


def _messages() -> list[tuple[str, bytes]]:
    rloc = ip_address("192.0.2.10")
    eid = InstanceId(1000, ip_address("10.1.0.0"))
    register = MapRegister(
        nonce=0x1122334455667788,
        records=(
            EidRecord(eid, 24, (RlocRecord(rloc, 1, 100, local=True),), ttl=3, authoritative=True),
        ),
        want_map_notify=True,
        ttl_timeout=True,
        xtr_id=0x0123456789ABCDEF,
    )
    signed = sign(register.encode(), DEMO_KEY)
    key = SecurityKey(5, (os.urandom(32),), rloc)
    reply = MapReply(
        nonce=0x99AABBCCDDEEFF00,
        records=(EidRecord(eid, 24, (RlocRecord(AfiList((rloc, key))),), authoritative=True),),
    )
    return [("Map-Register", signed), ("Map-Reply", reply.encode())]


def run_demo(args: argparse.Namespace) -> int:
    messages = _messages()
    for name, raw in messages:
        print(f"== {name}: {len(raw)} bytes\n   {raw.hex()}")
        print(f"   decoded by lisp/: {decode_control(raw)}")
        if name == "Map-Register":
            print(f"   HMAC-SHA-256 verifies with the site key: {verify(raw, DEMO_KEY)}")
    tshark = shutil.which("tshark")
    if tshark is None:
        print("tshark is not installed: run scripts/bootstrap.sh to compare with Wireshark")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "demo.pcap"
        src, dst = IPv4Address("192.0.2.10"), IPv4Address("192.0.2.1")
        write_pcap(pcap, [ipv4_udp(src, dst, 4342, 4342, raw) for _, raw in messages])
        out = subprocess.run(
            [tshark, "-r", str(pcap), "-O", "lisp", "-Y", "lisp"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    print("== the same bytes decoded by tshark:")
    lines = [line for line in out.stdout.splitlines() if line.startswith(("Frame", "Locator", " "))]
    print("\n".join(lines))
    return 0 if out.returncode == 0 else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="show lisp/ encoding checked by tshark")
    parser.set_defaults(handler=run_demo)
