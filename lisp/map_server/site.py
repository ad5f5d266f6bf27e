"""What a map-server is configured with and what it emits: sites, actions, refusals.

`Site` is a registering site (its EID-prefixes and shared keys); `SendTo` and `Log` are the
actions every entry point returns; `Refused` is how the register and resolve paths say no (the
server counts the reason and turns the message into a `Log`). `clean` and `show` make packet
bytes and addresses safe to put in a log line.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import TypeAlias

from lisp.address import IpAddress

Prefix: TypeAlias = IPv4Network | IPv6Network
# May the requester (the name of the site whose registration holds the Map-Request's source EID
# and RLOC; None if none does) learn the mapping of (instance-id, EID)? True: answer as usual;
# False: a negative reply, DROP_POLICY_DENIED; None: cannot tell yet (ask again later).
PolicyCheck: TypeAlias = Callable[[str | None, int, IpAddress], bool | None]
# Registrations one site may hold at once: a site allowed a /64 that accepts more-specifics could
# otherwise fill the map-server's memory with /128s (issue 12 #11).
MAX_REGISTRATIONS = 10_000


@dataclass(frozen=True, slots=True)
class Site:
    """A registering site: the EID-prefixes it may register and its shared keys (by key-id).

    Several keys allow a rollover: the Map-Register's key-id picks the key. `keys` is left out of
    repr, so logging a Site never leaks a secret. `max_registrations` bounds how many prefixes
    the site holds at once (a Map-Register that would pass it is refused, `site-limit`).
    """

    name: str
    keys: Mapping[int, bytes] = field(repr=False, hash=False)
    allowed: tuple[tuple[int, Prefix], ...] = ()
    accept_more_specifics: bool = True
    proxy_reply: bool = False
    max_registrations: int = MAX_REGISTRATIONS

    def __post_init__(self) -> None:
        keys: dict[int, bytes] = {}
        for key_id, key in self.keys.items():
            if not isinstance(key_id, int) or not 0 <= key_id <= 255:
                raise ValueError(f"site {self.name}: key-id {key_id!r} is not 0..255")
            raw = key.encode() if isinstance(key, str) else key
            if not isinstance(raw, bytes) or not raw:
                raise ValueError(f"site {self.name}: key-id {key_id} has an empty or non-bytes key")
            keys[key_id] = raw
        if not keys:
            raise ValueError(f"site {self.name}: no authentication key")
        limit = self.max_registrations
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"site {self.name}: max_registrations {limit!r} is not a count >= 1")
        allowed: list[tuple[int, Prefix]] = []
        for iid, prefix in self.allowed:
            if not isinstance(iid, int) or not 0 <= iid < 1 << 32:
                raise ValueError(f"site {self.name}: instance-id {iid!r} is not 0..2^32-1")
            net = ip_network(prefix) if isinstance(prefix, str) else prefix
            if not isinstance(net, IPv4Network | IPv6Network):
                raise ValueError(f"site {self.name}: {prefix!r} is not an IP prefix")
            allowed.append((iid, net))
        object.__setattr__(self, "keys", types.MappingProxyType(keys))
        object.__setattr__(self, "allowed", tuple(allowed))


@dataclass(frozen=True, slots=True)
class SendTo:
    """Send `data` from the control socket (UDP 4342) to `address` (ip, port)."""

    data: bytes
    address: tuple[str, int]


@dataclass(frozen=True, slots=True)
class Log:
    """One line for the operator. `reason` is the counter it went with (for rate limiting)."""

    level: int
    message: str
    reason: str = ""


MsAction: TypeAlias = SendTo | Log


class Refused(Exception):
    """A message refused for `reason` (a counter name), explained by `message`."""

    def __init__(self, reason: str, message: str, level: int = logging.WARNING) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.level = level


def clean(text: str, limit: int = 300) -> str:
    """Log-safe: control characters escaped (no forged log lines from packet bytes), bounded."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
