"""The app spec: YAML in, a checked `AppSpec` out, or one `AppSpecError` line naming the file,
the line and the field (`app.yml:9: spec.resources.memory: '512MB' is not a size (...)`).

    apiVersion: lispmesh/v1
    kind: App
    metadata:
      name: sensor-hub
      labels: {app: sensor}            # app labels, named by network policies
    spec:
      image: registry.local/sensor@sha256:<64 hex digits>   # pinned by digest, never a tag
      source: /srv/images/sensor       # where each node finds it: an OCI layout (dir or
                                       # tarball) on the node; over-the-mesh import is later
      kind: container                  # container | vm
      replicas: 3
      resources: {memory: 512Mi, cpu: 500m, disk: 1Gi}
      constraints:
        labels: {site: factory}        # node label = value (or one of a list)
        hypervisor: kvm                # vm only: kvm | tcg
        distinct_hosts: true
      scoring: binpack                 # binpack | spread (by free capacity)
      affinities: [{label: zone, value: a, weight: 50}]   # prefer (weight < 0: avoid)
      spread: [{label: site, weight: 100}]                # even out replicas over a label
      ports: [tcp/80, udp/53]
      env: {LOG_LEVEL: info}
      eid: {pool: apps, mode: per-replica}                # per-replica | anycast
      update: {strategy: rolling, max_unavailable: 1}
      disconnect: {lost_after: 5m, reconcile: keep-original}
      reschedule: {delay: 30s, max_delay: 1h}

Sizes and CPU use the node's units (64Mi, 1Gi, 500M; 0.5 or 500m CPUs), durations 30s, 5m, 1h
or seconds. CPU is kept in millicpus and sizes in bytes so that capacity sums are exact.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from common import yamldoc
from common.errors import LispmeshError
from common.workload_model import Port, parse_port
from common.yamldoc import Path, YamlDoc

API_VERSION = "lispmesh/v1"
KIND = "App"
MAX_REPLICAS = 100_000
KINDS = ("container", "vm")
HYPERVISORS = ("kvm", "tcg")
SCORINGS = ("binpack", "spread")
EID_MODES = ("per-replica", "anycast")
RECONCILE = ("keep-original", "keep-replacement")
UPDATE_STRATEGIES = ("rolling",)

_TOP = ("apiVersion", "kind", "metadata", "spec")
_METADATA = ("name", "labels")
_SPEC = ("image", "source", "kind", "replicas", "resources", "constraints", "scoring", "affinities",
         "spread", "ports", "env", "eid", "update", "disconnect", "reschedule")  # fmt: skip
_RESOURCES = ("memory", "cpu", "disk")
_CONSTRAINTS = ("labels", "hypervisor", "distinct_hosts")
_AFFINITY = ("label", "value", "weight")
_SPREAD = ("label", "weight")
_EID = ("pool", "mode")
_UPDATE = ("strategy", "max_unavailable")
_DISCONNECT = ("lost_after", "reconcile")
_RESCHEDULE = ("delay", "max_delay")

_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")  # DNS label: it names replicas
_LABEL_KEY = re.compile(r"[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?\Z")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_IMAGE = re.compile(r"(?:([a-z0-9][a-z0-9._/:-]*)@)?sha256:([0-9a-f]{64})\Z")
_SIZE = re.compile(r"(\d+)(|K|M|G|T|Ki|Mi|Gi|Ti)\Z")
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}  # fmt: skip
_DURATION = re.compile(r"(\d+)(s|m|h|d)?\Z")
_SECONDS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class AppSpecError(LispmeshError, ValueError):
    """An app spec that cannot be accepted: one line (file:line: field: problem)."""


@dataclass(frozen=True)
class Resources:
    memory: int = 128 << 20  # bytes
    millicpu: int = 1000
    disk: int = 1 << 30  # bytes


@dataclass(frozen=True)
class LabelMatch:
    """A node must carry label `key` with one of `values`."""

    key: str
    values: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.key}={'|'.join(self.values)}"


@dataclass(frozen=True)
class Constraints:
    labels: tuple[LabelMatch, ...] = ()
    hypervisor: str | None = None
    distinct_hosts: bool = False


@dataclass(frozen=True)
class Affinity:
    key: str
    value: str
    weight: int  # -100..100, not 0


@dataclass(frozen=True)
class Spread:
    key: str
    weight: int  # 1..100


@dataclass(frozen=True)
class EidPolicy:
    pool: str = "apps"
    mode: str = "per-replica"  # one EID per replica, or one anycast EID for all


@dataclass(frozen=True)
class UpdateStrategy:
    strategy: str = "rolling"
    max_unavailable: int = 1


@dataclass(frozen=True)
class DisconnectPolicy:
    lost_after: float = 300.0  # seconds disconnected before the replicas are replaced
    reconcile: str = "keep-original"


@dataclass(frozen=True)
class Reschedule:
    """Exponential backoff between replacement attempts (Nomad's service defaults)."""

    delay: float = 30.0
    max_delay: float = 3600.0


@dataclass(frozen=True)
class AppSpec:
    filename: str
    name: str
    labels: tuple[tuple[str, str], ...]  # sorted by key
    image: str
    kind: str
    replicas: int
    resources: Resources
    constraints: Constraints = Constraints()
    scoring: str = "binpack"
    affinities: tuple[Affinity, ...] = ()
    spread: tuple[Spread, ...] = ()
    ports: tuple[Port, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # sorted by name
    eid: EidPolicy = EidPolicy()
    update: UpdateStrategy = UpdateStrategy()
    disconnect: DisconnectPolicy = DisconnectPolicy()
    reschedule: Reschedule = Reschedule()
    source: str = ""  # an absolute path on the nodes: the OCI layout (dir or tarball) to import

    @property
    def version(self) -> str:
        """What a running replica must be replaced for when it changes (image, kind, resources,
        ports, env), as a short digest; scaling, scheduling and labels are not in it."""
        what = repr((self.image, self.kind, self.resources, self.ports, self.env))
        return hashlib.sha256(what.encode()).hexdigest()[:16]


def parse_app(text: str, filename: str = "app.yml") -> AppSpec:
    """The checked spec, or AppSpecError (one line)."""
    doc = YamlDoc(filename, AppSpecError)
    top = yamldoc.mapping(yamldoc.load(text, doc), (), doc, _TOP)
    if top.get("apiVersion") != API_VERSION:
        if "apiVersion" not in top:
            raise doc.fail((), f"apiVersion is required (apiVersion: {API_VERSION})")
        raise doc.fail(
            ("apiVersion",),
            f"unsupported apiVersion {top['apiVersion']!r} (this controller reads {API_VERSION})",
        )
    if top.get("kind") != KIND:
        raise doc.fail(("kind",), f"expected kind: {KIND}, got {yamldoc.describe(top.get('kind'))}")
    meta = required(top, "metadata", (), doc)
    meta = yamldoc.mapping(meta, ("metadata",), doc, _METADATA)
    name = name_field(required(meta, "name", ("metadata",), doc), ("metadata", "name"), doc)
    labels = labels_field(meta.get("labels"), ("metadata", "labels"), doc)
    spec = yamldoc.mapping(required(top, "spec", (), doc), ("spec",), doc, _SPEC)
    s: Path = ("spec",)
    kind = choice(spec.get("kind", "container"), (*s, "kind"), doc, KINDS)
    replicas = _int(spec.get("replicas", 1), (*s, "replicas"), doc, 0, MAX_REPLICAS)
    constraints = _constraints(spec.get("constraints"), (*s, "constraints"), doc, kind)
    update = _update(spec.get("update"), (*s, "update"), doc)
    if update.max_unavailable > max(replicas, 1):
        raise doc.fail(
            (*s, "update", "max_unavailable"),
            f"{update.max_unavailable} is more than the {replicas} replicas",
        )
    return AppSpec(
        filename=filename,
        name=name,
        labels=labels,
        image=_image(required(spec, "image", s, doc), (*s, "image"), doc),
        kind=kind,
        replicas=replicas,
        resources=_resources(spec.get("resources"), (*s, "resources"), doc),
        constraints=constraints,
        scoring=choice(spec.get("scoring", "binpack"), (*s, "scoring"), doc, SCORINGS),
        affinities=_affinities(spec.get("affinities"), (*s, "affinities"), doc),
        spread=_spreads(spec.get("spread"), (*s, "spread"), doc),
        ports=_ports(spec.get("ports"), (*s, "ports"), doc),
        env=_env(spec.get("env"), (*s, "env"), doc),
        eid=_eid(spec.get("eid"), (*s, "eid"), doc),
        update=update,
        disconnect=_disconnect(spec.get("disconnect"), (*s, "disconnect"), doc),
        reschedule=_reschedule(spec.get("reschedule"), (*s, "reschedule"), doc),
        source=_source(spec.get("source"), (*s, "source"), doc),
    )


# ---------------------------------------------------------------------------------------------
# values (the public ones are shared with other files that describe nodes and apps)


def required(fields: dict[str, Any], key: str, path: Path, doc: YamlDoc) -> Any:
    if fields.get(key) is None:
        raise doc.fail((*path, key), "is required")
    return fields[key]


def _section(value: Any, path: Path, doc: YamlDoc, known: tuple[str, ...]) -> dict[str, Any]:
    return {} if value is None else yamldoc.mapping(value, path, doc, known)


def name_field(value: Any, path: Path, doc: YamlDoc) -> str:
    text = yamldoc.string(value, path, doc, "a name")
    if not _NAME.match(text):
        raise doc.fail(path, f"{text!r} is not a name (lower-case letters, digits, -; up to 63)")
    return text


def choice(value: Any, path: Path, doc: YamlDoc, choices: tuple[str, ...]) -> str:
    text = yamldoc.string(value, path, doc, " or ".join(choices))
    if text not in choices:
        raise doc.fail(path, f"{text!r} is not {' or '.join(choices)}")
    return text


def _int(value: Any, path: Path, doc: YamlDoc, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise doc.fail(path, f"expected a whole number, got {yamldoc.describe(value)}")
    if not lo <= value <= hi:
        raise doc.fail(path, f"{value} is not in {lo}..{hi}")
    return value


def boolean(value: Any, path: Path, doc: YamlDoc) -> bool:
    if not isinstance(value, bool):
        raise doc.fail(path, f"expected true or false, got {yamldoc.describe(value)}")
    return value


def _label_key(key: str, path: Path, doc: YamlDoc) -> str:
    if not _LABEL_KEY.match(key):
        raise doc.fail(path, f"{key!r} is not a label key (lower-case letters, digits, . _ / -)")
    return key


def _label_value(value: Any, path: Path, doc: YamlDoc) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise doc.fail(path, f"expected a label value, got {yamldoc.describe(value)}")
    text = str(value)
    if not _LABEL_VALUE.match(text):
        raise doc.fail(path, f"{text!r} is not a label value (letters, digits, . _ -; up to 63)")
    return text


def labels_field(value: Any, path: Path, doc: YamlDoc) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise doc.fail(path, f"expected a mapping of label: value, got {yamldoc.describe(value)}")
    return tuple(
        sorted(
            (_label_key(k, (*path, k), doc), _label_value(v, (*path, k), doc))
            for k, v in value.items()
        )
    )


def _image(value: Any, path: Path, doc: YamlDoc) -> str:
    text = yamldoc.string(value, path, doc, "an image reference")
    if not _IMAGE.match(text):
        raise doc.fail(
            path,
            f"{text!r} is not pinned by digest (write NAME@sha256:<64 hex digits>; tags can move)",
        )
    return text


def _source(value: Any, path: Path, doc: YamlDoc) -> str:
    if value is None:
        return ""
    text = yamldoc.string(value, path, doc, "a path")
    if not text.startswith("/") or "\0" in text or "/../" in f"{text}/":
        raise doc.fail(path, f"{text!r} is not an absolute path (an OCI layout on the nodes)")
    return text


def size(value: Any, path: Path, doc: YamlDoc) -> int:
    match = _SIZE.match(str(value).strip()) if isinstance(value, str | int) else None
    if isinstance(value, bool) or not match or int(match.group(1)) == 0:
        raise doc.fail(path, f"{value!r} is not a size (e.g. 64Mi, 1Gi, 500M)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def cpu(value: Any, path: Path, doc: YamlDoc) -> int:
    milli: float = -1.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        milli = value * 1000
    elif isinstance(value, str) and re.fullmatch(r"\d{1,7}m", value.strip()):
        milli = int(value.strip()[:-1])
    elif isinstance(value, str):
        try:
            milli = float(value) * 1000
        except ValueError:
            milli = -1.0
    if not (10 <= milli <= 1_024_000) or milli != int(milli):
        raise doc.fail(path, f"{value!r} is not a CPU amount (0.5, 2, 500m; from 10m)")
    return int(milli)


def _duration(value: Any, path: Path, doc: YamlDoc) -> float:
    match = _DURATION.match(str(value).strip()) if isinstance(value, str | int) else None
    if isinstance(value, bool) or not match:
        raise doc.fail(path, f"{value!r} is not a duration (30s, 5m, 1h, or seconds)")
    return float(int(match.group(1)) * _SECONDS[match.group(2)])


def _resources(value: Any, path: Path, doc: YamlDoc) -> Resources:
    fields = _section(value, path, doc, _RESOURCES)
    default = Resources()
    return Resources(
        memory=size(fields["memory"], (*path, "memory"), doc)
        if "memory" in fields
        else default.memory,
        millicpu=cpu(fields["cpu"], (*path, "cpu"), doc) if "cpu" in fields else default.millicpu,
        disk=size(fields["disk"], (*path, "disk"), doc) if "disk" in fields else default.disk,
    )


def _constraints(value: Any, path: Path, doc: YamlDoc, kind: str) -> Constraints:
    fields = _section(value, path, doc, _CONSTRAINTS)
    matches = []
    labels = fields.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            got = yamldoc.describe(labels)
            raise doc.fail((*path, "labels"), f"expected a mapping of label: value, got {got}")
        for key, wanted in labels.items():
            where: Path = (*path, "labels", key)
            _label_key(key, where, doc)
            items = wanted if isinstance(wanted, list) else [wanted]
            if not items:
                raise doc.fail(where, "an empty list matches no node")
            values = tuple(
                _label_value(v, (*where, i) if isinstance(wanted, list) else where, doc)
                for i, v in enumerate(items)
            )
            matches.append(LabelMatch(key, values))
    hypervisor = None
    if fields.get("hypervisor") is not None:
        hypervisor = choice(fields["hypervisor"], (*path, "hypervisor"), doc, HYPERVISORS)
        if kind != "vm":
            raise doc.fail((*path, "hypervisor"), "only a vm needs a hypervisor (kind: vm)")
    distinct = (
        boolean(fields["distinct_hosts"], (*path, "distinct_hosts"), doc)
        if "distinct_hosts" in fields
        else False
    )
    return Constraints(tuple(matches), hypervisor, distinct)


def list_field(value: Any, path: Path, doc: YamlDoc) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise doc.fail(path, f"expected a list, got {yamldoc.describe(value)}")
    return value


def _affinities(value: Any, path: Path, doc: YamlDoc) -> tuple[Affinity, ...]:
    out = []
    for i, item in enumerate(list_field(value, path, doc)):
        where: Path = (*path, i)
        fields = yamldoc.mapping(item, where, doc, _AFFINITY)
        key = _label_key(
            yamldoc.string(required(fields, "label", where, doc), (*where, "label"), doc),
            (*where, "label"),
            doc,
        )
        wanted = _label_value(required(fields, "value", where, doc), (*where, "value"), doc)
        weight = _int(fields.get("weight", 50), (*where, "weight"), doc, -100, 100)
        if weight == 0:
            raise doc.fail((*where, "weight"), "a weight of 0 does nothing (-100..100)")
        out.append(Affinity(key, wanted, weight))
    return tuple(out)


def _spreads(value: Any, path: Path, doc: YamlDoc) -> tuple[Spread, ...]:
    out: list[Spread] = []
    for i, item in enumerate(list_field(value, path, doc)):
        where: Path = (*path, i)
        fields = yamldoc.mapping(item, where, doc, _SPREAD)
        key = _label_key(
            yamldoc.string(required(fields, "label", where, doc), (*where, "label"), doc),
            (*where, "label"),
            doc,
        )
        if any(s.key == key for s in out):
            raise doc.fail((*where, "label"), f"spread by {key!r} is already given")
        weight = _int(fields.get("weight", 50), (*where, "weight"), doc, 1, 100)
        out.append(Spread(key, weight))
    return tuple(out)


def _ports(value: Any, path: Path, doc: YamlDoc) -> tuple[Port, ...]:
    out: list[Port] = []
    for i, item in enumerate(list_field(value, path, doc)):
        where: Path = (*path, i)
        port = None
        if isinstance(item, str | int) and not isinstance(item, bool):
            port = parse_port(str(item), default_protocol="tcp")
        if port is None:
            raise doc.fail(where, f"{item!r} is not a port (tcp/80, udp/53, or 80 for tcp)")
        if port in out:
            raise doc.fail(where, f"{port} is given twice")
        out.append(port)
    return tuple(out)


def _env(value: Any, path: Path, doc: YamlDoc) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise doc.fail(path, f"expected a mapping of NAME: value, got {yamldoc.describe(value)}")
    out = []
    for key, item in value.items():
        if not _ENV_NAME.match(key):
            raise doc.fail((*path, key), f"{key!r} is not an environment variable name")
        if isinstance(item, dict | list) or item is None:
            raise doc.fail((*path, key), f"expected a value, got {yamldoc.describe(item)}")
        text = ("true" if item else "false") if isinstance(item, bool) else str(item)
        out.append((key, text))
    return tuple(sorted(out))


def _eid(value: Any, path: Path, doc: YamlDoc) -> EidPolicy:
    fields = _section(value, path, doc, _EID)
    default = EidPolicy()
    pool = name_field(fields["pool"], (*path, "pool"), doc) if "pool" in fields else default.pool
    mode = choice(fields.get("mode", default.mode), (*path, "mode"), doc, EID_MODES)
    return EidPolicy(pool, mode)


def _update(value: Any, path: Path, doc: YamlDoc) -> UpdateStrategy:
    fields = _section(value, path, doc, _UPDATE)
    default = UpdateStrategy()
    strategy = choice(
        fields.get("strategy", default.strategy), (*path, "strategy"), doc, UPDATE_STRATEGIES
    )
    most = _int(
        fields.get("max_unavailable", default.max_unavailable),
        (*path, "max_unavailable"),
        doc,
        1,
        MAX_REPLICAS,
    )
    return UpdateStrategy(strategy, most)


def _disconnect(value: Any, path: Path, doc: YamlDoc) -> DisconnectPolicy:
    fields = _section(value, path, doc, _DISCONNECT)
    default = DisconnectPolicy()
    lost_after = (
        _duration(fields["lost_after"], (*path, "lost_after"), doc)
        if "lost_after" in fields
        else default.lost_after
    )
    reconcile = choice(
        fields.get("reconcile", default.reconcile), (*path, "reconcile"), doc, RECONCILE
    )
    return DisconnectPolicy(lost_after, reconcile)


def _reschedule(value: Any, path: Path, doc: YamlDoc) -> Reschedule:
    fields = _section(value, path, doc, _RESCHEDULE)
    default = Reschedule()
    delay = _duration(fields["delay"], (*path, "delay"), doc) if "delay" in fields else 30.0
    most = (
        _duration(fields["max_delay"], (*path, "max_delay"), doc)
        if "max_delay" in fields
        else default.max_delay
    )
    if delay == 0:
        raise doc.fail((*path, "delay"), "must be at least 1s (replacements back off)")
    if most < delay:
        raise doc.fail((*path, "max_delay"), f"{most:g}s is less than the delay {delay:g}s")
    return Reschedule(delay, most)
