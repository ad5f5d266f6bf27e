"""The controller's Prometheus metrics: nodes by state, enrollments, Watch streams and how far
nodes lag behind their desired state, and the embedded map-server's registrations and events."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import Metric

from common.prometheus import counter, gauge
from controller_api.core import ControllerCore

NODE_STATES = ("enrolled", "online", "offline", "quarantined", "revoked")


def controller_families(core: ControllerCore, map_server: Any | None) -> Iterator[Metric]:
    rows = core.store.list_nodes()
    tpm = core.tpm_records.all()
    states = Counter(core.node_state(row, tpm.get(row.node_id)) for row in rows)
    by_state = gauge("lispmesh_controller_nodes", "nodes by state", labels=["state"])
    for state in NODE_STATES:
        by_state.add_metric([state], states.get(state, 0))
    yield by_state
    yield counter("lispmesh_controller_enrollments", "nodes ever enrolled", len(rows))
    yield gauge("lispmesh_controller_watch_streams", "open Watch (desired-state) streams",
                sum(core.streams.values()))  # fmt: skip
    # Config-stream lag: a live node that has not applied its current desired state yet.
    lag = gauge("lispmesh_controller_config_versions_behind",
                "desired-state versions a node has not applied yet", labels=["node"])  # fmt: skip
    for row in rows:
        if not row.revoked and row.config_version:
            lag.add_metric([row.name], max(0, row.config_version - (row.applied_version or 0)))
    yield lag
    if map_server is not None:
        status = map_server.service.status()
        yield gauge("lispmesh_map_server_registrations", "live registrations",
                    status["registration_count"])  # fmt: skip
        events = counter("lispmesh_map_server_events", "map-server messages and refusals",
                         labels=["event"])  # fmt: skip
        for name, count in sorted(status["counters"].items()):
            events.add_metric([name], count)
        yield events
