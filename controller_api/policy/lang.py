"""The policy file: YAML in, a checked `PolicyDoc` out, or one `PolicyError` line naming the file,
the line and the field (`policy.yml:12: rules[2].proto: unknown protocol 'tcpp' (...)`).

This module checks what the text alone can tell (syntax, fields, types, protocols, ports, names
defined twice); names of nodes are checked against the controller's inventory later
(`controller_api.policy.evaluate`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from common import yamldoc
from common.errors import LispmeshError
from common.yamldoc import Path, YamlDoc
from controller_api.apps.spec import labels_field

IpNetwork = IPv4Network | IPv6Network

LANGUAGE_VERSION = 1
MAX_RULES = 10_000
PROTOCOLS: dict[str, tuple[int, ...]] = {
    "tcp": (6,),
    "udp": (17,),
    "icmp": (1, 58),
    "icmpv6": (58,),
    "any": (),
}
KNOWN_PROTOCOLS = "tcp, udp, icmp, icmpv6, any"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_TOP = ("version", "name", "groups", "hosts", "rules", "tests")
_GROUP = ("tags", "nodes", "hosts", "apps", "labels")
_RULE = ("name", "from", "to", "proto", "ports", "action")
_TEST = ("name", "from", "to", "proto", "port", "expect")


class PolicyError(LispmeshError, ValueError):
    """A policy that cannot be accepted: one line (file:line: field: problem)."""


@dataclass(frozen=True)
class Group:
    name: str
    tags: tuple[str, ...]
    nodes: tuple[str, ...]
    hosts: tuple[str, ...]  # host names or prefixes
    line: int
    apps: tuple[str, ...] = ()  # app names: their replicas' EIDs
    labels: tuple[tuple[str, str], ...] = ()  # the replicas of apps carrying all these labels


@dataclass(frozen=True)
class Rule:
    index: int  # 0-based position
    name: str
    action: str  # "allow" | "deny"
    sources: tuple[str, ...]  # selectors
    destinations: tuple[str, ...]
    proto: str  # as written: "tcp", "icmp", "any", "47"
    protocols: tuple[int, ...]  # empty: any
    ports: tuple[tuple[int, int], ...]
    line: int

    def ports_text(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ports)

    def describe(self) -> str:
        ports = self.ports_text()
        what = self.proto + (f"/{ports}" if ports else "")
        return (
            f"{self.action} {what} from {', '.join(self.sources)} to {', '.join(self.destinations)}"
        )


@dataclass(frozen=True)
class TestCase:
    index: int  # 0-based; shown 1-based
    name: str
    source: str
    destination: str
    proto: str
    port: int | None
    expect: str
    line: int

    def label(self) -> str:
        named = f" {self.name!r}" if self.name else ""
        port = f"/{self.port}" if self.port is not None else ""
        return (
            f"test {self.index + 1}{named} ({self.source} -> {self.destination} {self.proto}{port})"
        )


@dataclass(frozen=True)
class PolicyDoc:
    filename: str
    text: str
    name: str
    groups: dict[str, Group]
    hosts: dict[str, tuple[IpNetwork, ...]]
    host_lines: dict[str, int]
    rules: tuple[Rule, ...]
    tests: tuple[TestCase, ...]

    def where(self, line: int) -> str:
        return f"{self.filename}:{line}"


# ---------------------------------------------------------------------------------------------
# YAML with line numbers (common.yamldoc) and field checks


class _Loaded(YamlDoc):
    def __init__(self, filename: str) -> None:
        super().__init__(filename, PolicyError)


_load = yamldoc.load
_mapping = yamldoc.mapping
_kind = yamldoc.describe
_string = yamldoc.string


def _name(value: Any, path: Path, loaded: _Loaded) -> str:
    text = _string(value, path, loaded, "a name")
    if not _NAME.match(text):
        raise loaded.fail(path, f"{text!r} is not a name (letters, digits, . _ -; up to 63)")
    return text


def _strings(value: Any, path: Path, loaded: _Loaded) -> tuple[str, ...]:
    """One string or a list of them (never empty)."""
    if isinstance(value, list):
        if not value:
            raise loaded.fail(path, "an empty list selects nothing")
        return tuple(_string(v, (*path, i), loaded) for i, v in enumerate(value))
    return (_string(value, path, loaded),)


def _network(text: str) -> IpNetwork | None:
    try:
        return ip_network(text, strict=False)
    except ValueError:
        return None


def looks_like_address(text: str) -> bool:
    return (text[:1].isdigit() and ("." in text or ":" in text)) or ":" in text


def _selector(text: str, path: Path, loaded: _Loaded) -> str:
    if text == "any":
        return text
    if text.startswith("tag:"):
        if not _NAME.match(text[4:]):
            raise loaded.fail(path, f"{text!r}: a tag is a name (letters, digits, . _ -)")
        return text
    if text.startswith("app:"):
        if not _NAME.match(text[4:]):
            raise loaded.fail(path, f"{text!r}: app:NAME names an app (its metadata.name)")
        return text
    if text.startswith("label:"):
        key, sep, value = text[6:].partition("=")
        if not sep:
            raise loaded.fail(path, f"{text!r}: expected label:KEY=VALUE (an app label)")
        labels_field({key: value}, path, loaded)  # the app spec's rules for keys and values
        return text
    if looks_like_address(text):
        net = _network(text)
        if net is None:
            raise loaded.fail(path, f"{text!r} is not an address or prefix")
        return str(net)
    if not _NAME.match(text):
        raise loaded.fail(path, f"{text!r} is not a name, an address or a prefix")
    return text


def _selectors(value: Any, path: Path, loaded: _Loaded) -> tuple[str, ...]:
    if value is None:
        raise loaded.fail(path, "is required (a group, host, node, tag:NAME, address or any)")
    items = _strings(value, path, loaded)
    many = isinstance(value, list)
    return tuple(
        _selector(text, (*path, i) if many else path, loaded) for i, text in enumerate(items)
    )


def _protocol(value: Any, path: Path, loaded: _Loaded) -> tuple[str, tuple[int, ...]]:
    if value is None:
        return "any", ()
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 255:
            raise loaded.fail(path, f"protocol number {value} is not in 0..255")
        return str(value), (value,)
    text = _string(value, path, loaded, "a protocol").lower()
    if text.isdigit():
        return _protocol(int(text), path, loaded)
    if text not in PROTOCOLS:
        raise loaded.fail(path, f"unknown protocol {value!r} (known: {KNOWN_PROTOCOLS})")
    return text, PROTOCOLS[text]


def _port_range(value: Any, path: Path, loaded: _Loaded) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, str) and re.fullmatch(r"\d+(-\d+)?", value.strip()):
        parts = value.strip().split("-")
        lo, hi = int(parts[0]), int(parts[-1])
    else:
        raise loaded.fail(path, f"expected a port or LOW-HIGH, got {_kind(value)}")
    if not (0 <= lo <= 65535 and 0 <= hi <= 65535):
        raise loaded.fail(path, f"port {value} is not in 0..65535")
    if lo > hi:
        raise loaded.fail(path, f"port range {value} runs backwards")
    return lo, hi


def _ports(value: Any, path: Path, loaded: _Loaded) -> tuple[tuple[int, int], ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        if not value:
            raise loaded.fail(path, "an empty list of ports matches nothing (leave it out: any)")
        return tuple(_port_range(v, (*path, i), loaded) for i, v in enumerate(value))
    return (_port_range(value, path, loaded),)


def _choice(value: Any, path: Path, loaded: _Loaded, choices: tuple[str, ...]) -> str:
    text = _string(value, path, loaded, " or ".join(choices))
    if text not in choices:
        raise loaded.fail(path, f"{text!r} is not {' or '.join(choices)}")
    return text


# ---------------------------------------------------------------------------------------------
# the document


def parse_policy(text: str, filename: str = "policy.yml") -> PolicyDoc:
    """The checked document, or PolicyError (one line)."""
    loaded = _Loaded(filename)
    data = _mapping(_load(text, loaded), (), loaded, _TOP)
    if "version" not in data:
        raise loaded.fail((), f"version is required (version: {LANGUAGE_VERSION})")
    if data["version"] != LANGUAGE_VERSION:
        raise loaded.fail(
            ("version",), f"unsupported version {data['version']!r} (this controller reads 1)"
        )
    name = _string(data["name"], ("name",), loaded) if data.get("name") is not None else ""
    hosts, host_lines = _hosts(data.get("hosts"), loaded)
    groups = _groups(data.get("groups"), loaded, hosts)
    rules = _rules(data.get("rules"), loaded)
    tests = _tests(data.get("tests"), loaded)
    return PolicyDoc(filename, text, name, groups, hosts, host_lines, rules, tests)


def _hosts(value: Any, loaded: _Loaded) -> tuple[dict[str, tuple[IpNetwork, ...]], dict[str, int]]:
    if value is None:
        return {}, {}
    if not isinstance(value, dict):
        raise loaded.fail(
            ("hosts",), f"expected a mapping of names to prefixes, got {_kind(value)}"
        )
    hosts: dict[str, tuple[IpNetwork, ...]] = {}
    lines: dict[str, int] = {}
    for key, item in value.items():
        path: Path = ("hosts", key)
        if key == "any" or key.startswith("tag:"):
            raise loaded.fail(path, f"{key!r} is reserved")
        _name(key, path, loaded)
        nets = []
        many = isinstance(item, list)
        for i, text in enumerate(_strings(item, path, loaded)):
            net = _network(text)
            if net is None:
                raise loaded.fail((*path, i) if many else path, f"{text!r} is not a prefix")
            nets.append(net)
        hosts[key] = tuple(nets)
        lines[key] = loaded.line(path)
    return hosts, lines


def _groups(
    value: Any, loaded: _Loaded, hosts: dict[str, tuple[IpNetwork, ...]]
) -> dict[str, Group]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise loaded.fail(("groups",), f"expected a mapping of group names, got {_kind(value)}")
    groups: dict[str, Group] = {}
    for key, item in value.items():
        path: Path = ("groups", key)
        if key == "any" or key.startswith("tag:"):
            raise loaded.fail(path, f"{key!r} is reserved")
        _name(key, path, loaded)
        if key in hosts:
            raise loaded.fail(path, f"{key!r} is both a group and a host")
        fields = _mapping(item, path, loaded, _GROUP)
        if not fields:
            raise loaded.fail(path, "a group needs tags, nodes, hosts, apps or labels")
        tag_items = _optional(fields, "tags", path, loaded)
        tags = tuple(_name(t, (*path, "tags"), loaded) for t in tag_items)
        node_items = _optional(fields, "nodes", path, loaded)
        nodes = tuple(_name(n, (*path, "nodes"), loaded) for n in node_items)
        members = []
        for i, text in enumerate(_optional(fields, "hosts", path, loaded)):
            where = (*path, "hosts", i)
            if text not in hosts and _network(text) is None:
                raise loaded.fail(where, f"{text!r} is not a host defined under hosts: or a prefix")
            members.append(text)
        app_items = _optional(fields, "apps", path, loaded)
        apps = tuple(_name(a, (*path, "apps"), loaded) for a in app_items)
        labels = labels_field(fields.get("labels"), (*path, "labels"), loaded)
        if "labels" in fields and not labels:
            raise loaded.fail((*path, "labels"), "an empty label selector would select every app")
        groups[key] = Group(
            key, tags, nodes, tuple(members), loaded.line(path), apps, labels
        )  # fmt: skip
    return groups


def _optional(fields: dict[str, Any], key: str, path: Path, loaded: _Loaded) -> tuple[str, ...]:
    if fields.get(key) is None:
        return ()
    return _strings(fields[key], (*path, key), loaded)


def _list(value: Any, key: str, loaded: _Loaded) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise loaded.fail((key,), f"expected a list, got {_kind(value)}")
    return value


def _rules(value: Any, loaded: _Loaded) -> tuple[Rule, ...]:
    items = _list(value, "rules", loaded)
    if len(items) > MAX_RULES:
        raise loaded.fail(("rules",), f"{len(items)} rules: at most {MAX_RULES}")
    rules: list[Rule] = []
    names: dict[str, int] = {}
    for index, item in enumerate(items):
        path: Path = ("rules", index)
        fields = _mapping(item, path, loaded, _RULE)
        name = (
            _string(fields["name"], (*path, "name"), loaded)
            if fields.get("name") is not None
            else f"rule-{index + 1}"
        )
        if name in names:
            raise loaded.fail(
                (*path, "name"), f"rule name {name!r} is already rules[{names[name]}]"
            )
        names[name] = index
        sources = _selectors(fields.get("from"), (*path, "from"), loaded)
        destinations = _selectors(fields.get("to"), (*path, "to"), loaded)
        proto, protocols = _protocol(fields.get("proto"), (*path, "proto"), loaded)
        ports = _ports(fields.get("ports"), (*path, "ports"), loaded)
        if ports and protocols and not set(protocols) <= {6, 17}:
            raise loaded.fail((*path, "ports"), f"ports need proto tcp or udp, not {proto}")
        action = (
            _choice(fields["action"], (*path, "action"), loaded, ("allow", "deny"))
            if fields.get("action") is not None
            else "allow"
        )
        rules.append(
            Rule(
                index,
                name,
                action,
                sources,
                destinations,
                proto,
                protocols,
                ports,
                loaded.line(path),
            )
        )
    return tuple(rules)


def _tests(value: Any, loaded: _Loaded) -> tuple[TestCase, ...]:
    tests: list[TestCase] = []
    for index, item in enumerate(_list(value, "tests", loaded)):
        path: Path = ("tests", index)
        fields = _mapping(item, path, loaded, _TEST)
        for required in ("from", "to", "expect"):
            if fields.get(required) is None:
                raise loaded.fail((*path, required), "is required")
        source = _string(fields["from"], (*path, "from"), loaded, "a node, address or host")
        destination = _string(fields["to"], (*path, "to"), loaded, "a node, address or host")
        port = None
        if fields.get("port") is not None:
            lo, hi = _port_range(fields["port"], (*path, "port"), loaded)
            if lo != hi:
                raise loaded.fail((*path, "port"), "a test checks one port, not a range")
            port = lo
        if fields.get("proto") is None and port is None:
            raise loaded.fail((*path, "proto"), "is required (tcp, udp, icmp, or a number)")
        proto, protocols = _protocol(fields.get("proto", "tcp"), (*path, "proto"), loaded)
        if proto == "any":
            raise loaded.fail((*path, "proto"), "a test checks one protocol, not any")
        if port is not None and not set(protocols) <= {6, 17}:
            raise loaded.fail((*path, "port"), f"{proto} has no ports")
        if port is None and set(protocols) <= {6, 17}:
            raise loaded.fail((*path, "port"), f"is required for {proto}")
        expect = _choice(fields["expect"], (*path, "expect"), loaded, ("allow", "deny"))
        name = _string(fields["name"], (*path, "name"), loaded) if fields.get("name") else ""
        tests.append(
            TestCase(index, name, source, destination, proto, port, expect, loaded.line(path))
        )
    return tuple(tests)
