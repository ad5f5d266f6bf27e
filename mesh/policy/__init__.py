"""Network policy enforcement, the Python reference engine: parser, flow table, engine.

The compiled rule format is `common.policy_format` (shared with the controller); the C engine in
mesh/_fastpath.c mirrors these modules and is held to the same verdicts by the unit tests.
"""

from mesh.policy.engine import (
    ALLOWED,
    DEFAULT_DENY,
    DENIED,
    ESTABLISHED,
    FLOW_LOG_SIZE,
    MALFORMED,
    NO_POLICY,
    RETURN,
    FlowLogEntry,
    PolicyCounters,
    PolicyEngine,
    address_text,
    policy_status,
)
from mesh.policy.flows import MAX_FLOWS, Flow, FlowTable, RuleCounters, Verdict
from mesh.policy.parser import FlowTuple, parse_flow

__all__ = [
    "ALLOWED",
    "DEFAULT_DENY",
    "DENIED",
    "ESTABLISHED",
    "FLOW_LOG_SIZE",
    "MALFORMED",
    "MAX_FLOWS",
    "NO_POLICY",
    "RETURN",
    "Flow",
    "FlowLogEntry",
    "FlowTable",
    "FlowTuple",
    "PolicyCounters",
    "PolicyEngine",
    "RuleCounters",
    "Verdict",
    "address_text",
    "parse_flow",
    "policy_status",
]
