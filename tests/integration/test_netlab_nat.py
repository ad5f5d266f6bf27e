"""netlab's NAT profiles, measured: real UDP sockets classify each gateway's mapping and filtering
the way RFC 4787 defines them (with the tests of RFC 5780 section 4), and the measured class must be
the configured profile. One lab holds one NAT of each profile."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from lispmesh.waiting import wait_until
from netlab import netns
from netlab.lab import Lab
from netlab.testing import lab_up

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

TOPO = Path(__file__).with_name("nat_profiles.clab.yml")
A, B = "10.0.9.2", "10.0.9.3"  # the two outside addresses of srv
PA, PB = 3478, 3479
EI, AD, APD = "endpoint-independent", "address-dependent", "address-and-port-dependent"
# profile -> (mapping, filtering) per RFC 4787
EXPECTED = {
    "full-cone": (EI, EI),
    "address-restricted": (EI, AD),
    "port-restricted": (EI, APD),
    "symmetric": (APD, APD),
}
HOSTS = {  # NAT node -> (inside host, its address)
    "nat-fc": ("h-fc", "192.168.1.2"),
    "nat-ar": ("h-ar", "192.168.2.2"),
    "nat-pr": ("h-pr", "192.168.3.2"),
    "nat-sy": ("h-sy", "192.168.4.2"),
}
WAIT = 5.0  # seconds any single expected datagram may take


def udp(ns: str, addr: str, port: int = 0) -> socket.socket:
    """A UDP socket bound inside namespace `ns` (a socket keeps the namespace it was made in)."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, port))
        s.settimeout(WAIT)
        return s

    return netns.run_in(ns, make)


class Probe:
    """srv's four server sockets (two addresses x two ports) and clients behind one NAT."""

    def __init__(self, lab: Lab, host: str, host_addr: str) -> None:
        self.host_ns, self.host_addr = lab.netns_name(host), host_addr
        srv = lab.netns_name("srv")
        self.servers = {(a, p): udp(srv, a, p) for a in (A, B) for p in (PA, PB)}
        self.clients: list[socket.socket] = []

    def close(self) -> None:
        for s in [*self.servers.values(), *self.clients]:
            s.close()

    def client(self) -> socket.socket:
        c = udp(self.host_ns, self.host_addr)
        self.clients.append(c)
        return c

    def mapped(self, c: socket.socket, server: tuple[str, int]) -> tuple[str, int]:
        """The outside address:port the server sees for client socket `c`."""
        c.sendto(b"map?", server)
        data, src = self.servers[server].recvfrom(64)
        assert data == b"map?"
        return src

    def arrives(self, c: socket.socket, frm: tuple[str, int], to: tuple[str, int]) -> bool:
        """Does a datagram from server `frm` to mapping `to` reach `c`? A control datagram from
        (A, PA), which the mapping was made for, follows it on the same path: once the control
        is in, the probe either came first or was dropped (no fixed wait)."""
        self.servers[frm].sendto(b"probe", to)
        self.servers[(A, PA)].sendto(b"control", to)
        got = []
        while b"control" not in got:
            got.append(c.recv(64))
        return b"probe" in got

    def mapping(self) -> str:
        c = self.client()
        x1, x2, x3 = (self.mapped(c, s) for s in ((A, PA), (B, PA), (B, PB)))
        if x1 == x2:
            return EI
        return AD if x2 == x3 else APD

    def filtering(self) -> str:
        c = self.client()
        m = self.mapped(c, (A, PA))
        if self.arrives(c, (B, PB), m):
            return EI
        return AD if self.arrives(c, (A, PB), m) else APD


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with lab_up(TOPO, tmp_path_factory.mktemp("natlab")) as lab:
        yield lab


@pytest.mark.parametrize("nat", sorted(HOSTS))
def test_measured_behaviour_is_the_configured_profile(lab: Lab, nat: str) -> None:
    profile = lab.topo.nodes[nat].nat_profile
    probe = Probe(lab, *HOSTS[nat])
    try:
        assert (probe.mapping(), probe.filtering()) == EXPECTED[profile]
    finally:
        probe.close()


def conntrack_has(lab: Lab, nat: str, port: int) -> bool:
    res = lab.exec(nat, ["conntrack", "-L", "-p", "udp", "--orig-port-src", str(port)])
    return f"sport={port} " in res.stdout


@pytest.mark.parametrize("nat", ["nat-fc", "nat-pr"])
def test_udp_timeout_forgets_idle_mappings(lab: Lab, nat: str) -> None:
    """udp-timeout is what the NAT really keeps: an idle mapping is gone after it, so a node whose
    keepalives are too rare loses its binding in a lab as it would behind a real gateway."""
    timeout = lab.topo.nodes[nat].nat_udp_timeout
    assert timeout is not None
    sysctl = lab.exec(nat, ["sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout_stream"])
    assert sysctl.stdout.strip() == str(timeout)
    probe = Probe(lab, *HOSTS[nat])
    try:
        c = probe.client()
        port = c.getsockname()[1]
        probe.mapped(c, (A, PA))
        probe.servers[(A, PA)].sendto(b"reply", probe.mapped(c, (A, PA)))
        assert c.recv(64) == b"reply"
        assert conntrack_has(lab, nat, port)
        wait_until(
            lambda: not conntrack_has(lab, nat, port),
            timeout=timeout * 4 + 10,
            what=f"{nat} to forget the idle mapping",
        )
        if lab.topo.nodes[nat].nat_profile == "full-cone":
            maps = lab.exec(nat, ["nft", "list", "map", "inet", "netlab_nat", "udp_mapping"])
            assert f": {HOSTS[nat][1]} . {port}" not in maps.stdout
    finally:
        probe.close()
