"""Builds overlay labs for tests: a map-server and xTR nodes on an underlay bridge (netlab).

Each xTR `nI` gets EIDs 10.1.I.0/24 and fd00:1:I::/64 (its address .1 / ::1 on the TUN), and one
underlay address 10.77.0.(10+I) per uplink on the bridge `ul` (a second uplink gets
10.77.0.(20+I)). The map-server is `ms` at 10.77.0.1. Identities come from a lab CA made per test.
Real processes (`lispmesh node run`) run in the namespaces; netlab stops them on destroy.

Extra netlab nodes (`extra_nodes`, e.g. a `linux` node running a test tool as its `cmd`) can be
added, and an xTR with `via="x"` reaches `ul` through node `x` instead of directly: its uplink U
links to `x:in-nIuU`, and `x:out-nIuU` links to the bridge (see `via_ifnames`). Nothing forwards
between the two unless the tool running in `x` does.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import yaml

from lispmesh.waiting import wait_until
from mesh.control import ControlError, query
from netlab import Lab
from tests.lab_identities import provision_lab_identities

REPO_ROOT = Path(__file__).resolve().parents[2]
MS_ADDRESS = "10.77.0.1"
SITE_KEY = "lab-site-key-0123"
EID_SUPERNET4 = "10.1.0.0/16"
EID_SUPERNET6 = "fd00:1::/32"


def eid4(index: int, host: int = 1) -> str:
    return f"10.1.{index}.{host}"


def eid6(index: int, host: int = 1) -> str:
    return f"fd00:1:{index}::{host}"


def rloc(index: int, uplink: int = 0) -> str:
    return f"10.77.0.{10 * (uplink + 1) + index}"


def via_ifnames(xtr: str, uplink: int = 0) -> tuple[str, str]:
    """(towards the xTR, towards `ul`): the interfaces of the `via` node for one xTR uplink."""
    return f"in-{xtr}u{uplink}", f"out-{xtr}u{uplink}"


@dataclass
class XtrSpec:
    index: int
    uplinks: int = 1
    site_key: str = SITE_KEY
    eid_prefixes: list[str] | None = None  # default: 10.1.I.0/24 and fd00:1:I::/64
    security: dict[str, Any] = field(default_factory=dict)
    via: str | None = None  # an extra node standing between this xTR's uplinks and `ul`
    dataplane: str = "auto"  # "c", "python" or "auto" (the node config's `dataplane`)
    policy: dict[str, Any] | None = None  # the node config's `policy:` (a NodePolicy as a dict)
    metrics: str | None = None  # the node config's `metrics.listen` (Prometheus), if any
    xtr: dict[str, Any] = field(default_factory=dict)  # more `xtr:` keys (e.g. mss_clamp)
    timers: dict[str, Any] | None = None  # over the lab's xtr.timers (fast ones for tests)

    @property
    def name(self) -> str:
        return f"n{self.index}"


class OverlayLab:
    def __init__(
        self,
        workdir: Path,
        xtrs: list[XtrSpec],
        name_prefix: str = "ov",
        extra_nodes: dict[str, dict[str, Any]] | None = None,
        identities: dict[str, Path] | None = None,
    ) -> None:
        self.workdir = workdir
        # Per xTR, a directory with node.key, node.crt and ca.crt (default: a lab CA made here).
        self.identities = identities
        self.xtrs = {spec.name: spec for spec in xtrs}
        # netlab node definitions added as given (`env` defaults to the one the xTRs get).
        self.extra_nodes = dict(extra_nodes or {})
        for spec in xtrs:
            if spec.via is not None and spec.via not in self.extra_nodes:
                raise ValueError(f"{spec.name}: via node {spec.via!r} is not in extra_nodes")
        self.name = f"{name_prefix}{secrets.token_hex(3)}"
        self.run_dir = workdir / "run"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lab: Lab | None = None
        self._write_files()

    # ------------------------------------------------------------------ files

    def _xtr_prefixes(self, spec: XtrSpec) -> list[str]:
        if spec.eid_prefixes is not None:
            return spec.eid_prefixes
        return [f"10.1.{spec.index}.0/24", f"fd00:1:{spec.index}::/64"]

    def _write_files(self) -> None:
        identities = self.identities or provision_lab_identities(
            self.workdir / "pki",
            "lab-ca",
            {name: [(0, p) for p in self._xtr_prefixes(spec)] for name, spec in self.xtrs.items()},
        )
        configs = self.workdir / "configs"
        configs.mkdir(exist_ok=True)
        ms_config = {
            "name": "ms",
            "run_dir": str(self.run_dir),
            "state_dir": str(self.workdir / "state" / "ms"),
            "map_server": {
                "listen": [MS_ADDRESS],
                "sites": [
                    {
                        "name": "lab",
                        "keys": {0: SITE_KEY},
                        "allowed": [EID_SUPERNET4, EID_SUPERNET6],
                    }
                ],
            },
        }
        (configs / "ms.yml").write_text(yaml.safe_dump(ms_config))
        for name, spec in self.xtrs.items():
            ident = identities[name]
            prefixes = self._xtr_prefixes(spec)
            config = {
                "name": name,
                "run_dir": str(self.run_dir),
                "state_dir": str(self.workdir / "state" / name),
                "identity": {
                    "key": str(ident / "node.key"),
                    "cert": str(ident / "node.crt"),
                    "ca": str(ident / "ca.crt"),
                },
                "security": spec.security,
                "dataplane": spec.dataplane,
                "xtr": {
                    "tun": "lm0",
                    "eid_prefixes": prefixes,
                    "eid_addresses": [str(ip_network(p)[1]) for p in prefixes],
                    "overlay_routes": [EID_SUPERNET4, EID_SUPERNET6],
                    "rlocs": [
                        {
                            "address": rloc(spec.index, u),
                            "interface": f"eth{u + 1}",
                            "priority": u + 1,
                            "weight": 100,
                        }
                        for u in range(spec.uplinks)
                    ],
                    "map_servers": [{"address": MS_ADDRESS, "key": spec.site_key}],
                    "timers": {
                        "register_interval": 5,
                        "probe_interval": 0.3,
                        "probe_dead_after": 1.5,
                        "map_request_retry": 0.5,
                        **(spec.timers or {}),
                    },
                },
            }
            config["xtr"].update(spec.xtr)
            if not spec.security:
                del config["security"]
            if spec.policy is not None:
                config["policy"] = spec.policy
            if spec.metrics is not None:
                config["metrics"] = {"listen": spec.metrics}
            (configs / f"{name}.yml").write_text(yaml.safe_dump(config))
        run = f"{sys.executable} -m lispmesh node run --config"
        # The node processes import this checkout, whether or not it is installed.
        env = {"PYTHONPATH": str(REPO_ROOT)}
        nodes: dict[str, Any] = {
            "ul": {"kind": "bridge"},
            "ms": {
                "kind": "lispmesh-node",
                "cmd": f"{run} {configs / 'ms.yml'}",
                "env": env,
                "addresses": {"eth1": [f"{MS_ADDRESS}/24"]},
            },
        }
        for name, node in self.extra_nodes.items():
            nodes[name] = {"env": env, **node}
        links = [{"endpoints": ["ms:eth1", "ul:ms"]}]
        for name, spec in self.xtrs.items():
            addresses = {f"eth{u + 1}": [f"{rloc(spec.index, u)}/24"] for u in range(spec.uplinks)}
            nodes[name] = {
                "kind": "lispmesh-node",
                "cmd": f"{run} {configs / f'{name}.yml'}",
                "env": env,
                "addresses": addresses,
                # Two uplinks in one subnet: each interface answers ARP only for its own address.
                "exec": [
                    "sysctl -qw net.ipv4.conf.all.arp_ignore=1",
                    "sysctl -qw net.ipv4.conf.all.arp_announce=2",
                ],
            }
            for u in range(spec.uplinks):
                if spec.via is None:
                    links.append({"endpoints": [f"{name}:eth{u + 1}", f"ul:{name}u{u}"]})
                    continue
                inside, outside = via_ifnames(name, u)
                links.append({"endpoints": [f"{name}:eth{u + 1}", f"{spec.via}:{inside}"]})
                links.append({"endpoints": [f"{spec.via}:{outside}", f"ul:{name}u{u}"]})
        topo = {"name": self.name, "topology": {"nodes": nodes, "links": links}}
        self.topology_file = self.workdir / "overlay.clab.yml"
        self.topology_file.write_text(yaml.safe_dump(topo, sort_keys=False))

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> OverlayLab:
        self.lab = Lab.from_file(self.topology_file)
        try:
            self.lab.deploy()
        except BaseException:
            self.lab.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.lab is not None:
            self.lab.destroy()

    def logs(self, node: str, stream: str = "stderr") -> str:
        assert self.lab is not None
        path = self.lab.labdir / node / f"{stream}.log"
        return path.read_text() if path.exists() else ""

    # ------------------------------------------------------------------ observing

    def status(self, node: str) -> dict[str, Any]:
        return query(self.run_dir / f"{node}.sock", "status")

    def try_status(self, node: str) -> dict[str, Any] | None:
        try:
            return self.status(node)
        except ControlError:
            return None

    def wait_registered(self, nodes: list[str] | None = None, timeout: float = 20.0) -> None:
        for node in nodes or list(self.xtrs):

            def registered(node: str = node) -> bool:
                status = self.try_status(node)
                return bool(status and all(m["registered"] for m in status["xtr"]["map_servers"]))

            try:
                wait_until(registered, timeout, f"{node} to register")
            except AssertionError:
                log = self.logs(node)[-3000:]
                raise AssertionError(f"{node} did not register; log:\n{log}") from None

    def exec(
        self, node: str, argv: list[str], timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        assert self.lab is not None
        return subprocess.run(
            ["ip", "netns", "exec", self.lab.netns_name(node), *argv],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def ping(self, node: str, address: str, count: int = 3, timeout: float = 2.0) -> bool:
        result = self.exec(
            node, ["ping", "-c", str(count), "-i", "0.2", "-W", str(timeout), address],
            timeout=count * timeout + 10,
        )  # fmt: skip
        return result.returncode == 0

    def wait_ping(self, node: str, address: str, timeout: float = 15.0) -> None:
        wait_until(lambda: self.ping(node, address, count=1, timeout=1), timeout,
                   f"{node} to reach {address}", interval=0.1)  # fmt: skip

    def set_policy(self, node: str, policy: dict[str, Any] | None) -> dict[str, Any]:
        """Rewrite `node`'s config with `policy` (None: no policy section) and reload it."""
        path = self.workdir / "configs" / f"{node}.yml"
        config = yaml.safe_load(path.read_text())
        config.pop("policy", None)
        if policy is not None:
            config["policy"] = policy
        path.write_text(yaml.safe_dump(config))
        return query(self.run_dir / f"{node}.sock", "reload")

    def drops(self, node: str) -> dict[str, int]:
        return dict(self.status(node)["xtr"]["drops"])

    def dump(self) -> str:
        """Everything useful when a test fails."""
        parts = []
        for node in ["ms", *self.xtrs]:
            parts.append(f"--- {node} status: {json.dumps(self.try_status(node))[:3000]}")
            parts.append(f"--- {node} log:\n{self.logs(node)[-3000:]}")
        for node in self.extra_nodes:
            for stream in ("stdout", "stderr"):
                parts.append(f"--- {node} {stream}:\n{self.logs(node, stream)[-2000:]}")
        return "\n".join(parts)
