"""Placement (issue 14): where the replicas of an app run.

model        the cluster snapshot the scheduler reads and the plan it returns, with explanations
feasibility  the filters (health, drain, runtime, hypervisor, labels, capacity) and VM overhead
scheduler    the pure function (state, app, seed) -> plan
reconciler   edge failure semantics, sans-IO: disconnected, lost after lost_after, reconcile on
             return, backoff after refusals, drain
"""

from controller_api.placement.model import (
    Allocation,
    ClusterState,
    Failure,
    Filtered,
    Node,
    Placement,
    Plan,
    Score,
    Stop,
)
from controller_api.placement.scheduler import candidate_limit, schedule

__all__ = [
    "Allocation",
    "ClusterState",
    "Failure",
    "Filtered",
    "Node",
    "Placement",
    "Plan",
    "Score",
    "Stop",
    "candidate_limit",
    "schedule",
]
