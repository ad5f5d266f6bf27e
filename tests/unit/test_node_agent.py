"""The node agent's parts that need no root: backoff, desired state -> NodeConfig, checkpoint,
state dir, the shipped systemd unit."""

from __future__ import annotations

import configparser
import dataclasses
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.files import write_certificate, write_private_key
from controller_api.ca import CertificateAuthority
from controller_api.gen.lispmesh.v1 import config_pb2
from mesh.config import Rloc
from node.backoff import Backoff
from node.desired import DesiredStateError, LocalFacts, to_node_config
from node.renewal import RenewalSchedule
from node.state import Enrollment, StateDir, StateError

UNIT = Path(__file__).resolve().parents[2] / "node" / "systemd" / "lispmesh-node.service"


def _desired(version: int = 3) -> config_pb2.DesiredState:
    return config_pb2.DesiredState(
        version=version, node_id="abc", node_name="edge-1", instance_id=7,
        eid_prefixes=["10.250.3.0/24", "fd00:1:0:3::/64"],
        eid_addresses=["10.250.3.1", "fd00:1:0:3::1"],
        overlay_routes=["10.250.0.0/16", "fd00:1::/48"],
        map_servers=[config_pb2.MapServer(address="10.77.0.1", port=4342, site_key="s" * 32)],
        map_resolvers=["10.77.0.1"],
        security=config_pb2.Security(encryption=True, cipher_suite="aes128-gcm",
                                     rekey_after_packets=1000, rekey_after_seconds=60),
        timers=config_pb2.Timers(register_interval=10, probe_interval=0.5),
    )  # fmt: skip


def _facts(
    tmp_path: Path, rlocs: tuple[Rloc, ...] = (Rloc(ip_address("10.77.0.11"), "eth1"),)
) -> LocalFacts:
    return LocalFacts(tmp_path, tmp_path / "run", tmp_path / "k", tmp_path / "c", tmp_path / "ca",
                      "lm0", rlocs)  # fmt: skip


def test_backoff_is_full_jitter_and_capped() -> None:
    top = Backoff(base=0.5, cap=30, rand=lambda: 1.0)
    assert [top.next() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    low = Backoff(rand=lambda: 0.0)
    assert low.next() == 0.0
    top.reset()
    assert top.next() == 0.5
    real = Backoff(base=1, cap=4)
    assert all(0 <= real.next() <= 4 for _ in range(100))


def test_desired_state_becomes_the_runtime_config(tmp_path: Path) -> None:
    config = to_node_config(_desired(), _facts(tmp_path))
    assert config.name == "edge-1" and config.map_server is None
    xtr = config.xtr
    assert xtr is not None and xtr.instance_id == 7 and xtr.tun == "lm0"
    assert [str(p) for p in xtr.eid_prefixes] == ["10.250.3.0/24", "fd00:1:0:3::/64"]
    assert xtr.map_servers[0].key == b"s" * 32 and xtr.timers.register_interval == 10
    assert xtr.rlocs[0].interface == "eth1"
    assert config.security.encryption and config.security.authenticate_key_exchange
    assert config.security.rekey_after_seconds == 60
    assert config.identity is not None and config.identity.key == tmp_path / "k"
    assert config.security.revoked_peers == frozenset()
    revoking = _desired()
    revoking.revoked_nodes.extend(["edge-9", "edge-4"])
    revoked = to_node_config(revoking, _facts(tmp_path)).security.revoked_peers
    assert revoked == frozenset({"edge-9", "edge-4"})
    assert config.metrics_listen is None  # opt-in
    facts = dataclasses.replace(_facts(tmp_path), metrics_listen="127.0.0.1:9464")
    assert to_node_config(_desired(), facts).metrics_listen == "127.0.0.1:9464"


def test_the_controllers_rtrs_reach_the_xtr_and_the_one_named_relays(tmp_path: Path) -> None:
    desired = _desired()
    assert to_node_config(desired, _facts(tmp_path)).xtr.rtrs == ()  # type: ignore[union-attr]
    desired.rtrs.append(config_pb2.Rtr(name="hub", address="10.0.1.2"))
    xtr = to_node_config(desired, _facts(tmp_path)).xtr
    assert xtr is not None and [(r.name, str(r.address)) for r in xtr.rtrs] == [("hub", "10.0.1.2")]
    assert xtr.rtr is None  # edge-1 is not the RTR
    desired.node_name = "hub"
    assert to_node_config(desired, _facts(tmp_path)).xtr.rtr is not None  # type: ignore[union-attr]


def test_no_uplink_or_bad_state_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DesiredStateError, match="no uplink"):
        to_node_config(_desired(), _facts(tmp_path, ()))
    bad = _desired()
    bad.eid_prefixes.append("10.999.0.0/24")
    with pytest.raises(DesiredStateError, match="desired state v3"):
        to_node_config(bad, _facts(tmp_path))


def test_checkpoint_round_trip_is_private(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    state.prepare()
    assert state.load_checkpoint() is None
    state.save_checkpoint(_desired())
    assert state.checkpoint_file.stat().st_mode & 0o777 == 0o600
    assert state.load_checkpoint() == _desired()
    state.checkpoint_file.write_text("{torn")
    assert state.load_checkpoint() is None
    state.forget_checkpoint()
    assert not state.checkpoint_file.exists()


def test_enrollment_file(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    with pytest.raises(StateError, match="no node is enrolled"):
        state.load_enrollment()
    enrollment = Enrollment(
        "id", "n1", "10.0.0.1:7443", "10.0.0.1:7444", 0, ("10.250.0.0/24",), "t"
    )
    state.save_enrollment(enrollment)
    assert state.load_enrollment() == enrollment


def test_systemd_unit_runs_the_agent_at_boot() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    service, unit = parser["Service"], parser["Unit"]
    assert "lispmesh node run" in service["ExecStart"]
    # The token comes from the 0600 EnvironmentFile as $LISPMESH_TOKEN: on the command line
    # every local user could read it in `ps`.
    assert "--controller" in service["ExecStart"] and "TOKEN" not in service["ExecStart"]
    assert service["EnvironmentFile"].lstrip("-") == "/etc/lispmesh/node.env"
    assert service["Restart"] == "always"
    assert "network-online.target" in unit["After"] and "network-online.target" in unit["Wants"]
    assert service["RestartPreventExitStatus"] == "78"
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    assert (UNIT.parent / "lispmesh-node.env.example").exists()


def test_cli_wiring() -> None:
    from lispmesh.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["node", "run", "--controller", "h:1", "--token", "t", "--uplink", "eth1"]
    )
    assert args.config is None and args.uplink == ["eth1"]
    args = parser.parse_args(["node", "run", "--config", "x.yml"])
    assert args.config == "x.yml"
    for argv in (["controller", "serve"], ["controller", "token", "create", "--ttl", "1h"],
                 ["controller", "node", "revoke", "n1"], ["controller", "topology", "--json"],
                 ["node", "join", "--controller", "h", "--token", "t"]):  # fmt: skip
        assert parser.parse_args(argv).handler
    assert parser.parse_args(["controller", "token", "create", "--ttl", "90m"]).ttl == 5400


def test_status_report_from_a_runtime_status() -> None:
    from node.telemetry import metrics, status_report

    status = {
        "runtime_errors": {"tun-write": 1},
        "xtr": {
            "uplinks": [{"interface": "eth1", "address": "10.77.0.11", "up": True}],
            "peers": [{"name": "n2", "eids": ["10.250.1.0/24"], "last_key_exchange_ago": 1}],
            "map_cache": [{"peer": "n2", "in_use": "10.77.0.12"}, {"peer": None, "in_use": None}],
            "map_servers": [{"registered": True}],
            "drops": {"no-mapping": 2},
            "stats": {"map-requests": 5},
        },
    }
    report = status_report(status, 4)
    assert report.peers[0].name == "n2" and report.peers[0].rloc == "10.77.0.12"
    assert list(report.peers[0].eid_prefixes) == ["10.250.1.0/24"]
    assert report.map_cache_size == 2 and report.registered and report.applied_version == 4
    assert dict(report.drops) == {"no-mapping": 2, "runtime-tun-write": 1}
    assert report.uplinks[0].address == "10.77.0.11"
    m = metrics(status, 0.0)
    assert m.counters["stats.map-requests"] == 5 and m.rss_bytes > 0 and m.cpu_seconds > 0


@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xfe\x00garbage", b'{"version": "\xc3\x28"}', b"[1, 2]", b"\x00" * 64],
    ids=["not-utf8", "bad-utf8-in-json", "json-of-another-shape", "zeroes"],
)
def test_a_corrupted_checkpoint_is_ignored_with_one_line_not_a_crash(
    tmp_path: Path, garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # A disk error or a torn write leaves any bytes: the agent must start without its
    # checkpoint (and say so) instead of raising at every start (a crash loop under systemd).
    state = StateDir(tmp_path / "node")
    state.prepare()
    state.save_checkpoint(_desired())
    state.checkpoint_file.write_bytes(garbage)
    with caplog.at_level("WARNING"):
        assert state.load_checkpoint() is None
    assert [r.getMessage() for r in caplog.records if "checkpoint" in r.getMessage()], caplog.text


# ---------------------------------------------------------------------------- renewal


def _cert(tmp_path: Path, name: str, days: float, now: float) -> tuple[Any, Any]:
    ca = CertificateAuthority.create(tmp_path / f"ca-{name}", "test CA", now=now)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue(name, key.public_key(), [(0, ip_network("10.1.0.0/24"))], valid_days=days,
                    now=now)  # fmt: skip
    return key, cert


def test_renewal_is_due_at_two_thirds_and_retries_with_capped_backoff(tmp_path: Path) -> None:
    now = 1_900_000_000.0  # a clock we control: no waiting
    _, cert = _cert(tmp_path, "edge-1", 30, now)
    schedule = RenewalSchedule.for_certificate(cert, Backoff(base=60, cap=3600, rand=lambda: 1.0))
    start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    assert schedule.next_attempt() == pytest.approx(start + (end - start) * 2 / 3)
    assert schedule.next_attempt() - now == pytest.approx(20 * 86400, abs=600)
    # The controller is down: each failure waits longer, never more than the cap, and the
    # error is kept for `node status`.
    t = schedule.next_attempt()
    waits = []
    for _ in range(9):
        retry = schedule.failed(t, "cannot reach the controller")
        waits.append(retry - t)
        t = retry
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert schedule.last_error == "cannot reach the controller"
    # Renewed: the next renewal follows the new certificate, backoff and error are reset.
    _, fresh = _cert(tmp_path, "edge-1b", 30, t)
    schedule.renewed(fresh)
    assert schedule.retry_at is None and schedule.last_error == ""
    assert schedule.next_attempt() == pytest.approx(t + 20 * 86400, abs=600)
    assert schedule.failed(schedule.next_attempt(), "x") - schedule.due_at == 60


@pytest.mark.parametrize("crashed_after", ["new key", "both new", "key moved"])
def test_a_crash_during_renewal_leaves_a_matching_pair(tmp_path: Path, crashed_after: str) -> None:
    state = StateDir(tmp_path / "state")
    old_key, old_cert = _cert(tmp_path, "old", 30, 1_900_000_000.0)
    new_key, new_cert = _cert(tmp_path, "new", 30, 1_900_000_000.0)
    write_private_key(state.key, old_key)
    write_certificate(state.cert, old_cert)
    write_private_key(state.new_key, new_key)
    if crashed_after != "new key":
        write_certificate(state.new_cert, new_cert)
    if crashed_after == "key moved":
        state.new_key.replace(state.key)
    state.finish_renewal()
    key = serialization.load_pem_private_key(state.key.read_bytes(), None)
    cert = x509.load_pem_x509_certificate(state.cert.read_bytes())
    assert cert.public_key() == key.public_key()
    assert cert == (old_cert if crashed_after == "new key" else new_cert)
    assert not state.new_key.exists() and not state.new_cert.exists()
    assert state.key.stat().st_mode & 0o777 == 0o600
