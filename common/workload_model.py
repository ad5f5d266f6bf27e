"""What the controller's app spec and the node's workload spec share: a workload's ports.

Both ends speak of the same `tcp/80`: the app spec (controller_api.apps.spec) lists them for the
mesh policy and placement, the image annotations (node.workloads.package) for the runtime. One
type and one parser, so the two cannot drift apart. (Resources are not shared: the controller
counts millicpu for placement, the runtime needs a CPU quota and a pids limit.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PORT = re.compile(r"(?:(tcp|udp)/)?(\d{1,5})\Z")


@dataclass(frozen=True)
class Port:
    protocol: str  # tcp | udp
    port: int

    def __str__(self) -> str:
        return f"{self.protocol}/{self.port}"


def parse_port(text: str, default_protocol: str | None = None) -> Port | None:
    """`tcp/80`, `udp/53`, or a bare `80` when `default_protocol` is given; None if it is not
    one of those with a port in 1..65535."""
    match = _PORT.match(text.strip())
    if match is None or not 0 < int(match.group(2)) < 65536:
        return None
    protocol = match.group(1) or default_protocol
    return None if protocol is None else Port(protocol, int(match.group(2)))
