"""What the kernel knows about underlay path MTUs, for mesh.pmtu (the runtime's side; Linux).

- `enable_errors`: IP_RECVERR / IPV6_RECVERR on an underlay socket, so ICMP "fragmentation
  needed" / "packet too big" for our datagrams (and the kernel's own EMSGSIZE for a datagram
  above a PMTU it already knows) are queued on the socket with the MTU they report;
- `read_mtu_errors`: drain that queue: (destination address, MTU) per "too big" error;
- `route_mtu`: the MTU of the kernel's route from an uplink to an RLOC (the interface's, or
  the PMTU it learnt), read from a connected socket (IP_MTU / IPV6_MTU).
"""

from __future__ import annotations

import errno
import socket
import struct

IP_RECVERR = 11
IPV6_RECVERR = 25
IP_MTU = 14
IPV6_MTU = 24
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err
MAX_ERRORS_PER_CALL = 64


def enable_errors(sock: socket.socket) -> None:
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)


def read_mtu_errors(sock: socket.socket) -> list[tuple[str, int]]:
    """The "too big" errors queued on `sock` (the queue is drained; other errors are dropped:
    an unreachable RLOC is the prober's business)."""
    found: list[tuple[str, int]] = []
    for _ in range(MAX_ERRORS_PER_CALL):
        try:
            _data, ancillary, _flags, address = sock.recvmsg(1, 1024, socket.MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        for level, kind, data in ancillary:
            mtu = too_big_mtu(level, kind, data)
            if mtu is not None and address:
                found.append((str(address[0]), mtu))
    return found


def too_big_mtu(level: int, kind: int, data: bytes) -> int | None:
    """The MTU of one IP_RECVERR / IPV6_RECVERR control message, if it is a "too big" error
    (ICMP frag-needed, ICMPv6 packet-too-big or the kernel's local EMSGSIZE)."""
    if (level, kind) not in (
        (socket.IPPROTO_IP, IP_RECVERR),
        (socket.IPPROTO_IPV6, IPV6_RECVERR),
    ) or len(data) < EXTENDED_ERR.size:
        return None
    code, _origin, _type, _code, _pad, info, _data2 = EXTENDED_ERR.unpack_from(data)
    return int(info) if code == errno.EMSGSIZE and 0 < info < 1 << 17 else None


def route_mtu(rloc: str, port: int, device: str | None) -> int | None:
    """The kernel's MTU towards `rloc` (None when there is no route or no such device)."""
    family = socket.AF_INET6 if ":" in rloc else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            if device:
                sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, device.encode())
            sock.connect((rloc, port))
            if family == socket.AF_INET6:
                return int(sock.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU))
            return int(sock.getsockopt(socket.IPPROTO_IP, IP_MTU))
    except OSError:
        return None
