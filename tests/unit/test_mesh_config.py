"""The node config file: a good file parses; each bad one gives one line naming the field."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.config import ConfigError, load_config, parse_config

GOOD: dict[str, Any] = {
    "name": "edge-1",
    "identity": {"key": "keys/n.key", "cert": "keys/n.crt", "ca": "keys/ca.crt"},
    "xtr": {
        "eid_prefixes": ["10.1.0.0/24", "fd00:1::/64"],
        "eid_addresses": ["10.1.0.1", "fd00:1::1"],
        "overlay_routes": ["10.0.0.0/8"],
        "rlocs": [{"address": "192.168.10.2", "interface": "eth1", "priority": 2}],
        "map_servers": [{"address": "192.168.10.1", "key": "s3cret-key"}],
        "timers": {"probe_interval": 0.5},
    },
    "map_server": {
        "sites": [{"name": "a", "keys": {0: "s3cret-key"}, "allowed": ["[7]10.1.0.0/16"]}]
    },
}


def test_good_config_parses_with_defaults(tmp_path: Path) -> None:
    config = parse_config(GOOD, tmp_path / "node.yml")
    assert config.name == "edge-1"
    assert config.security.encryption is True
    assert config.security.cipher_suite == 5
    assert config.identity is not None and config.identity.key == tmp_path / "keys/n.key"
    assert config.xtr is not None
    assert config.xtr.rlocs[0].address == ip_address("192.168.10.2")
    assert config.xtr.rlocs[0].priority == 2 and config.xtr.rlocs[0].weight == 100
    assert config.xtr.map_resolvers == (ip_address("192.168.10.1"),)
    assert config.xtr.timers.probe_interval == 0.5
    assert config.map_server is not None
    assert config.map_server.sites[0].allowed == ((7, ip_network("10.1.0.0/16")),)
    assert "s3cret" not in repr(config)


def _with(path: str, value: Any) -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


_DELETE = object()

BAD = [
    ("name", _DELETE, "name: is required"),
    ("name", "bad name!", "name: 'bad name!'"),
    ("xtr.rlocs.0.address", "10.0.0.300", "xtr.rlocs[0].address: '10.0.0.300' is not an IP"),
    ("xtr.rlocs.0.priority", 256, "xtr.rlocs[0].priority: expected an integer in 0..255"),
    ("xtr.rlocs", [], "xtr.rlocs: at least one RLOC"),
    ("xtr.eid_prefixes.0", "10.1.0.1/24", "xtr.eid_prefixes[0]: '10.1.0.1/24' is not a network"),
    ("xtr.eid_addresses.0", "10.9.0.1", "xtr.eid_addresses: 10.9.0.1 is not inside"),
    ("xtr.map_servers.0.key", "short", "xtr.map_servers[0].key: expected a shared key"),
    ("xtr.tun", "a-very-long-tun-name", "xtr.tun: 'a-very-long-tun-name' is longer than 15"),
    ("xtr.timers.probe_interval", "fast", "xtr.timers.probe_interval: expected a number"),
    ("xtr.timers.typo", 1, "xtr.timers.typo: unknown field"),
    ("xtr.colour", "blue", "xtr.colour: unknown field"),
    ("map_server.sites.0.keys", {"zero": "s3cret-key"}, "map_server.sites[0].keys: key-id"),
    ("map_server.sites.0.allowed.0", "[x]10.0.0.0/8", "allowed[0]: '[x]10.0.0.0/8'"),
    ("security", {"cipher_suite": "rot13"}, "security.cipher_suite: unknown 'rot13'"),
    ("security", {"encryption": "yes"}, "security.encryption: expected true or false"),
    ("security", {"revoked_peers": "n1"}, "security.revoked_peers: expected a list"),
    ("security", {"revoked_peers": [7]}, "security.revoked_peers[0]: expected a node name"),
    (
        "security",
        {"retired_certificates": ["ab"]},
        "security.retired_certificates[0]: expected a SHA-256 fingerprint",
    ),
    ("identity", _DELETE, "identity: is required for the authenticated key exchange"),
    ("metrics", {"listen": "nowhere:1"}, "metrics.listen: metrics listen address 'nowhere:1'"),
    ("metrics", {"port": 9}, "metrics.port: unknown field"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_the_field(tmp_path: Path, path: str, value: Any, message: str) -> None:
    source = tmp_path / "node.yml"
    with pytest.raises(ConfigError) as caught:
        parse_config(_with(path, value), source)
    text = str(caught.value)
    assert text.startswith(f"{source}: "), text
    assert message in text, text
    assert "\n" not in text


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "node.yml"
    path.write_text("name: a\nxtr:\n  rlocs: [unclosed\n")
    with pytest.raises(ConfigError, match=r"node\.yml:\d+: invalid YAML"):
        load_config(path)


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read: No such file"):
        load_config(tmp_path / "absent.yml")


def test_interop_mode_needs_no_identity(tmp_path: Path) -> None:
    data = _with("identity", _DELETE)
    data["security"] = {"authenticate_key_exchange": False}
    config = parse_config(data, tmp_path / "node.yml")
    assert config.identity is None
    assert config.security.authenticate_key_exchange is False


def test_revoked_peers_default_empty_and_parse(tmp_path: Path) -> None:
    assert parse_config(GOOD, tmp_path / "node.yml").security.revoked_peers == frozenset()
    data = dict(GOOD, security={"revoked_peers": ["n1", "edge-7", "n1"]})
    config = parse_config(data, tmp_path / "node.yml")
    assert config.security.revoked_peers == frozenset({"n1", "edge-7"})
    data = dict(GOOD, security={"retired_certificates": ["ab" * 32]})
    assert parse_config(data, tmp_path / "n.yml").security.retired_certificates == {"ab" * 32}


@pytest.mark.parametrize(
    ("mtu", "dataplane", "fast"),
    [(1400, "auto", True), (2012, "c", True), (9000, "auto", False), (9000, "c", None)],
)
def test_an_mtu_the_c_path_cannot_carry_is_refused_or_runs_on_python(
    tmp_path: Path, mtu: int, dataplane: str, fast: bool | None
) -> None:
    # Issue 12 finding 8: the C engine's buffers hold inner packets up to 2012 bytes; a larger
    # TUN MTU used to be accepted and its big packets cut on receive.
    from mesh import fastpath
    from mesh.node import NodeRuntime, NodeSetupError

    if not fastpath.available():
        pytest.fail("the C data path is not built")
    data = _with("xtr.mtu", mtu)
    data["dataplane"] = dataplane
    runtime = NodeRuntime(parse_config(data, tmp_path / "node.yml"))
    if fast is None:
        with pytest.raises(NodeSetupError, match=r"xtr\.mtu 9000 is more than the C data path"):
            runtime._use_fast_path()
    else:
        assert runtime._use_fast_path() is fast
