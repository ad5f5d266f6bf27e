"""Errors netlab raises: each one is a single line a person can act on."""

from __future__ import annotations

from common.errors import LispmeshError


class NetlabError(LispmeshError):
    """A failure the user can act on (bad topology, busy name, failed exec...)."""


class TopologyError(NetlabError):
    """A topology file is wrong; the message names the file, the line and the field."""

    def __init__(self, file: str, line: int | None, field: str, message: str) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


class NetemUnavailable(NetlabError):
    """The running kernel has no sch_netem, so delay and loss cannot be emulated."""

    def __init__(self) -> None:
        super().__init__(
            "this kernel has no tc netem qdisc (sch_netem): delay, jitter and loss cannot be "
            "emulated here; --rate (tbf) and --state still work"
        )
