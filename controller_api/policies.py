"""The controller's network policy: check, apply, compile per node, and answer the embedded
map-server's "may this node learn that EID?" (see controller_api/policy for the language).

The applied policy and its generation live in SQLite (`PolicyStore`). A node's compiled policy
is part of its desired state, so a new policy, or a node joining or leaving while a policy is
installed (the generation is bumped: every node's rules may change), reaches every node through
its Watch stream at once. So do the apps' placements (`app:NAME` and label selectors): the app
runner reads them after every round on every replica and hands them over (`apps_changed`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from controller_api.gen.lispmesh.v1 import config_pb2, policy_pb2
from controller_api.policy import (
    Evaluator,
    Inventory,
    InventoryApp,
    InventoryNode,
    PolicyError,
    compile_node,
    node_policy_to_proto,
    parse_policy,
)
from controller_api.policy_store import PolicyRow, PolicyStore
from controller_api.settings import rfc3339
from controller_api.store import NodeRow, Store

log = logging.getLogger("lispmesh.controller.policy")

SITE_PREFIX = "node-"  # controller_api.embedded_ms.site_name


def inventory_node(node: NodeRow) -> InventoryNode:
    """The node's own EIDs; the app replicas it hosts are added by the Inventory."""
    return InventoryNode(
        node.name, node.instance_id, (node.eid4, node.eid6), node.tags, node.node_id
    )


@dataclass(frozen=True)
class Checked:
    evaluator: Evaluator
    warnings: list[str]

    def summary(self) -> list[policy_pb2.NodePolicySummary]:
        out = []
        for node in self.evaluator.inventory.nodes:
            compiled = compile_node(self.evaluator, node, 0)
            out.append(
                policy_pb2.NodePolicySummary(
                    node=node.name,
                    instance_id=node.instance_id,
                    egress_rules=len(compiled.egress),
                    ingress_rules=len(compiled.ingress),
                )
            )
        return out


class PolicyManager:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.policies = PolicyStore(store)
        self.clock = clock
        self.row: PolicyRow | None = self.policies.current()
        self._evaluator: Evaluator | None = None
        self._compiled: dict[str, config_pb2.Policy] = {}
        self._generation = self.policies.generation()
        # The apps' placed replicas (controller_api.apps.members), read once when first needed
        # and then replaced by the app runner; None: no apps on this controller.
        self.apps_source: Callable[[], tuple[InventoryApp, ...]] | None = None
        self._apps: tuple[InventoryApp, ...] | None = None

    # ------------------------------------------------------------------ state

    @property
    def installed(self) -> bool:
        return self.row is not None

    def inventory(self) -> Inventory:
        if self._apps is None:
            self._apps = self.apps_source() if self.apps_source is not None else ()
        nodes = (inventory_node(n) for n in self.store.list_nodes(include_revoked=False))
        return Inventory.of(nodes, self._apps)

    def apps_changed(self, apps: tuple[InventoryApp, ...]) -> bool:
        """The apps' placed replicas as read now. True if that changes what nodes enforce (a
        policy is installed): the caller tells every node. Not a new generation: each replica
        reads the same placements from the store itself."""
        if apps == self._apps:
            return False
        self._apps = apps
        self._evaluator = None
        self._compiled.clear()
        return self.row is not None

    def evaluator(self) -> Evaluator | None:
        if self.row is None:
            return None
        if self._evaluator is None:
            doc = parse_policy(self.row.text, self.row.filename)  # it was checked when applied
            self._evaluator = Evaluator(doc, self.inventory())
        return self._evaluator

    def reload(self) -> None:
        """Read the applied policy and its generation again (another replica may have applied
        one or bumped it)."""
        self.row = self.policies.current()
        self._generation = self.policies.generation()
        self.forget_inventory()

    def forget_inventory(self) -> None:
        """The nodes changed elsewhere: compile again from the store on the next use. (The
        replica that changed them bumps the generation; every replica reloads it then.)"""
        self._evaluator = None
        self._compiled.clear()

    def inventory_changed(self) -> bool:
        """A node joined or left: recompile (and bump the generation) if a policy is installed."""
        self._evaluator = None
        self._compiled.clear()
        if self.row is None:
            return False
        self._generation = self.policies.bump_generation()
        return True

    # ------------------------------------------------------------------ admin

    def check(self, text: str, filename: str) -> Checked:
        """PolicyError (one line) if the policy cannot be accepted."""
        doc = parse_policy(text, filename or "policy.yml")
        evaluator = Evaluator(doc, self.inventory())
        warnings = evaluator.check()
        return Checked(evaluator, warnings)

    def apply(self, text: str, filename: str, who: str) -> tuple[Checked, int]:
        checked = self.check(text, filename)
        ev = checked.evaluator
        compiled = {n.name: compile_node(ev, n, 0).to_dict() for n in ev.inventory.nodes}
        version, generation = self.policies.add(
            text, filename or "policy.yml", compiled, self.clock(), who
        )
        self.row = self.policies.current()
        self._evaluator, self._generation = ev, generation
        self._compiled.clear()
        log.info("policy v%d (%s) applied by %s: %d rules, %d tests passed",
                 version, filename, who, len(ev.doc.rules), len(ev.doc.tests))  # fmt: skip
        return checked, version

    def state(self) -> policy_pb2.PolicyState:
        row = self.row
        if row is None:
            return policy_pb2.PolicyState(installed=False)
        ev = self.evaluator()
        assert ev is not None
        return policy_pb2.PolicyState(
            installed=True, version=row.version, text=row.text, filename=row.filename,
            applied_at=rfc3339(row.applied_at), applied_by=row.applied_by,
            generation=self._generation, nodes=Checked(ev, []).summary(),
        )  # fmt: skip

    # ------------------------------------------------------------------ nodes

    def for_node(self, node: NodeRow) -> config_pb2.Policy | None:
        """The node's compiled policy for its desired state (None: no policy installed)."""
        if self.row is None or node.revoked:
            return None
        cached = self._compiled.get(node.node_id)
        if cached is None:
            ev = self.evaluator()
            assert ev is not None
            # The inventory's entry: with the app replicas the node hosts.
            entry = ev.inventory.by_name.get(node.name) or inventory_node(node)
            compiled = compile_node(ev, entry, self._generation)
            cached = node_policy_to_proto(compiled, self.row.filename, self.row.version)
            self._compiled[node.node_id] = cached
        return cached

    def may_learn(self, site: str | None, instance_id: int, eid: IPv4Address | IPv6Address) -> (
        bool | None
    ):  # fmt: skip
        """The embedded map-server's policy check (lisp.map_server.PolicyCheck)."""
        ev = self.evaluator()
        if ev is None:
            return True  # no policy: everyone learns everything, as before policies
        if site is None or not site.startswith(SITE_PREFIX):
            return None  # not identified (yet): the requester asks again
        requester = ev.inventory.by_name.get(site[len(SITE_PREFIX) :])
        if requester is None:
            return None
        return ev.may_exchange(requester, instance_id, eid)


def explain_reply(explanation: Any, policy_version: int) -> policy_pb2.Explanation:
    d = explanation.to_dict()
    return policy_pb2.Explanation(
        verdict=d["verdict"], rule=d["rule"] or "", line=d["line"] or 0, reason=d["reason"],
        src=d["src"], dst=d["dst"], instance_id=d["instance_id"], protocol=d["protocol"],
        port=d["port"] or 0, policy_version=policy_version,
        skipped=[policy_pb2.SkippedRule(rule=s["rule"], line=s["line"], why=s["why"])
                 for s in d["skipped"]],
    )  # fmt: skip


__all__ = ["Checked", "PolicyError", "PolicyManager", "explain_reply"]
