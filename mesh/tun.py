"""The inside of the node: a TUN device carrying the workloads' IP packets.

Opened with IFF_TUN | IFF_NO_PI, so each read returns exactly one IPv4 or IPv6 packet. The fd
is non-blocking: the data path drains it from the event loop.
"""

from __future__ import annotations

import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
VNET_HDR_LEN = 10


class TunDevice:
    """`vnet_hdr`: each read and write carries a virtio-net header, and the kernel may hand us
    64 KiB TCP super-packets with partial checksums (TSO): the C data path segments them."""

    def __init__(self, name: str, vnet_hdr: bool = False) -> None:
        if not name or len(name) > 15:
            raise ValueError(f"TUN name {name!r} must be 1..15 characters")
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot open /dev/net/tun: {exc.strerror}") from None
        try:
            flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
            request = struct.pack("16sH", name.encode(), flags)
            reply = fcntl.ioctl(fd, TUNSETIFF, request)
            if vnet_hdr:
                fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
        except OSError as exc:
            os.close(fd)
            raise OSError(exc.errno, f"cannot create TUN {name}: {exc.strerror}") from None
        self.fd = fd
        self.vnet_hdr = vnet_hdr
        self.name = reply[:16].rstrip(b"\x00").decode()

    def read(self, size: int = 65536) -> bytes:
        return os.read(self.fd, size)

    def write(self, packet: bytes) -> int:
        return os.write(self.fd, packet)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
