"""A node's protocol timers: set in its config file or sent by the controller in the desired state
(controller_api.settings picks the controller's defaults), used by the xTR (mesh.config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timers:
    register_interval: float = 60.0  # seconds between Map-Register refreshes
    register_ttl_minutes: int = 3  # record TTL in Map-Registers (T bit set)
    # RLOC-probing (lisp.rloc_probe): only an RLOC we send to without hearing back is probed,
    # every probe_interval, and is down after probe_dead_after (the failover time); idle RLOCs
    # get one probe per probe_idle_interval, to notice a dead one before traffic starts.
    # (Fast timers are cheap here: only a path in use that stops answering is probed at that
    # rate, so failover stays under a second; see bench/failover_bench.py.)
    probe_interval: float = 0.2
    probe_dead_after: float = 0.7
    probe_idle_interval: float = 300.0
    map_request_retry: float = 1.0  # minimum gap between Map-Requests for one EID
    queue_limit: int = 16  # packets held per EID while its Map-Request is out
