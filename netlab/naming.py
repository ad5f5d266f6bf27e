"""Names of namespaces and interfaces, and their deterministic shortening.

Namespaces follow containerlab's container names: `clab-<lab>-<node>`; a custom `prefix: p` gives
`p-<lab>-<node>`, `prefix: __lab-name` gives `<lab>-<node>` and `prefix: ""` gives `<node>`.
The management network of a lab lives in its own namespace, `<prefix>-<lab>--mgmt`, so nothing is
added to the host's root namespace.

Linux limits interface names to 15 bytes (IFNAMSIZ - 1). Longer names are shortened to a readable
head plus a hash of the whole name, so the same topology always gives the same kernel names and
two long names sharing a head do not collide.
"""

from __future__ import annotations

import hashlib
import re

IFNAMSIZ_MAX = 15
DEFAULT_PREFIX = "clab"
LAB_NAME_PREFIX = "__lab-name"

# Node and lab names end up in namespace file names and in interface names.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# What the kernel accepts in an interface name: no '/', ':', whitespace; not "." or "..".
_IFNAME_BAD = re.compile(r"[/:\s]")


def ns_name(prefix: str, lab: str, node: str) -> str:
    """The namespace (container) name of a node, as containerlab would name its container."""
    if prefix == "":
        return node
    if prefix == LAB_NAME_PREFIX:
        return f"{lab}-{node}"
    return f"{prefix}-{lab}-{node}"


def mgmt_ns_name(prefix: str, lab: str) -> str:
    """The namespace holding the lab's management bridge (two dashes: no node can be named so)."""
    if prefix in ("", LAB_NAME_PREFIX):
        return f"{lab}--mgmt"
    return f"{prefix}-{lab}--mgmt"


def lab_ns_prefix(prefix: str, lab: str) -> str:
    """A string every namespace of the lab starts with (empty when prefix is "")."""
    if prefix == "":
        return ""
    if prefix == LAB_NAME_PREFIX:
        return f"{lab}-"
    return f"{prefix}-{lab}-"


def short_hash(text: str, n: int = 4) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def shorten_ifname(name: str, limit: int = IFNAMSIZ_MAX) -> str:
    """`name` if it fits the kernel's limit, else a readable head + '-' + 4 hex of its hash."""
    if len(name.encode()) <= limit:
        return name
    head = name.encode()[: limit - 5].decode(errors="ignore").rstrip("-_.")
    return f"{head}-{short_hash(name)}"


def ifname_problem(name: object) -> str | None:
    """Why `name` cannot be an interface name, or None when it can (before shortening)."""
    if not isinstance(name, str) or name == "":
        return "interface name must be a non-empty string"
    if name in (".", ".."):
        return f"'{name}' is not a valid interface name"
    if _IFNAME_BAD.search(name):
        return f"interface name '{name}' contains '/', ':' or whitespace"
    if not name.isascii() or not name.isprintable():
        return f"interface name '{name}' must be printable ASCII"
    return None


def host_ifname(lab: str, name: str) -> str:
    """Kernel name of an interface in the root namespace (a `host:` endpoint)."""
    return shorten_ifname(name)
