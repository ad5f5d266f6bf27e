"""The AppAdmin gRPC service (apps.proto) and the task that runs the app loop on the leader.

Deploy stores the spec (a refused spec is an answer, ok=false with the one line naming the
field, not an RPC error) and runs a round at once when this replica leads, so the answer holds
the plan committed; a follower stores it and the leader places it within its interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import Any

import grpc

from controller_api.apps.eids import eids_by_replica
from controller_api.apps.loop import AppLoop, placement_node, reported
from controller_api.apps.members import policy_apps
from controller_api.apps.registry import Deployed, delete_app, get_app, list_apps, put_app
from controller_api.apps.spec import AppSpecError, parse_app
from controller_api.apps.workloads import workload_name
from controller_api.auth import Authenticator, Denied
from controller_api.core import ControllerCore
from controller_api.gen.lispmesh.v1 import apps_pb2, apps_pb2_grpc
from controller_api.placement import ClusterState, schedule
from controller_api.placement.commit import read_allocations
from controller_api.replicas import LeaderLoop
from controller_api.settings import rfc3339
from controller_api.store import Conflict, Fence, StoreError

log = logging.getLogger("lispmesh.controller.apps")

MAX_SPEC_BYTES = 256 << 10


class AppRunner:
    """Runs `AppLoop.round` every `interval` (and at once when kicked) while this replica leads;
    tells the nodes whose placements changed, and keeps the map-server's allowances in step with
    the placements on every replica."""

    def __init__(
        self, core: ControllerCore, loop: AppLoop, leader: LeaderLoop | None, interval: float
    ) -> None:
        self.core = core
        self.loop = loop
        self.leader = leader
        self.interval = interval
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._allowed: Any = None
        self._lock = asyncio.Lock()

    def fence(self) -> tuple[bool, Fence | None]:
        """(leads, its fence): SQLite has no election, the one controller leads unfenced."""
        if self.leader is None:
            return True, None
        fence = self.leader.election.fence
        return fence is not None and self.leader.leading, fence

    async def tick(self) -> None:
        async with self._lock:
            leads, fence = self.fence()
            if leads:
                try:
                    result = await asyncio.to_thread(self.loop.round, fence)
                except StoreError as exc:
                    log.warning("app round: %s", exc)
                else:
                    # The map-server first: a node told to register a moved EID is allowed to.
                    if await self._sync_map_server():
                        self.core.notify_all()  # every node's delegated EIDs changed
                    for node_id in result.notify:
                        self.core.notify(node_id)
                    return
            await self._sync_map_server()

    async def _sync_map_server(self) -> bool:
        """Give the map-server the placements' allowances; True if they changed."""
        from controller_api.apps.workloads import allowances

        pool = self.core.app_pool
        if pool is None:
            return False
        allowed = await asyncio.to_thread(allowances, self.core.store, pool)
        changed: bool = allowed != self._allowed
        if changed:
            self._allowed = allowed
            self.core.sync_map_server()
        # Policies naming apps follow their replicas (placed, moved, scaled, removed).
        apps = await asyncio.to_thread(policy_apps, self.core.store, pool)
        if self.core.policies.apps_changed(apps):
            self.core.notify_all()
        return changed

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a bug in one round must not end app placement
                log.exception("app round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.interval)
            self._kick.clear()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="apps")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class AppService(apps_pb2_grpc.AppAdminServicer):
    def __init__(self, core: ControllerCore, auth: Authenticator, runner: AppRunner) -> None:
        self.core = core
        self.auth = auth
        self.runner = runner

    async def _admin(self, context: grpc.aio.ServicerContext) -> str:
        try:
            return self.auth.admin(context)
        except Denied as denied:
            await context.abort(denied.code, denied.message)
            raise

    async def _app(self, name: str, context: grpc.aio.ServicerContext) -> Deployed:
        deployed = get_app(self.core.store, name)
        if deployed is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no app named {name!r}")
        assert deployed is not None
        return deployed

    async def Deploy(
        self, request: apps_pb2.AppDocument, context: grpc.aio.ServicerContext
    ) -> apps_pb2.DeployResult:
        who = await self._admin(context)
        filename = request.filename or "app.yml"
        if len(request.text.encode()) > MAX_SPEC_BYTES:
            return apps_pb2.DeployResult(
                ok=False, error=f"{filename}: larger than {MAX_SPEC_BYTES} bytes"
            )
        try:
            spec = parse_app(request.text, filename)
        except AppSpecError as exc:
            return apps_pb2.DeployResult(ok=False, error=str(exc))
        pool = self.core.app_pool
        if pool is None or spec.eid.pool != pool.name:
            have = pool.name if pool else "none"
            return apps_pb2.DeployResult(
                ok=False,
                error=f"{filename}: spec.eid.pool: no EID pool {spec.eid.pool!r} here "
                f"(this controller has: {have})",
            )
        leads, fence = self.runner.fence()
        try:
            created = put_app(self.core.store, spec, request.text, who, self.core.clock(), fence)
        except Conflict:
            return apps_pb2.DeployResult(
                ok=False, error=f"app {spec.name} changed while deploying: deploy again"
            )
        log.info("app %s %s by %s (version %s)", spec.name, "deployed" if created else
                 "updated", who, spec.version)  # fmt: skip
        self.runner.loop.event(spec.name, f"{'deployed' if created else 'updated'} by {who}, "
                               f"version {spec.version}")  # fmt: skip
        plan: list[str] = []
        if leads:
            await self.runner.tick()
            done = self.runner.loop.events.get(spec.name)
            plan = list(done or [])[-20:]
        else:
            plan = ["stored: the leading replica places it within its next round"]
        return apps_pb2.DeployResult(
            ok=True, name=spec.name, version=spec.version, plan=plan, created=created
        )

    def _status(self, deployed: Deployed) -> apps_pb2.AppStatus:
        store, spec = self.core.store, deployed.spec
        pool = self.core.app_pool
        table = eids_by_replica(store, pool) if pool is not None else {}
        rows = {r.name: r for r in store.list_nodes(include_revoked=False)}
        out = apps_pb2.AppStatus(
            name=spec.name, image=spec.image, kind=spec.kind, replicas=spec.replicas,
            version=spec.version, deployed_at=rfc3339(deployed.deployed_at),
            deployed_by=deployed.deployed_by, labels=dict(spec.labels),
            events=list(self.runner.loop.events.get(spec.name, ())),
        )  # fmt: skip
        for a in sorted(read_allocations(store), key=lambda a: (a.replica, a.node)):
            if a.app != spec.name:
                continue
            eid = table.get((a.app, a.replica)) or table.get((a.app, -1))
            row = rows.get(a.node)
            seen = reported(row).get(workload_name(a.app, a.replica), {}) if row else {}
            state = seen.get("state", "PENDING") if seen.get("version") == a.version else "PENDING"
            out.placed.add(
                replica=a.replica, node=a.node,
                eids=[str(eid.ipv4), str(eid.ipv6)] if eid else [],
                state=state, running=a.running, version=a.version,
                last_error=seen.get("last_error", ""), created_at=rfc3339(a.created),
                restarts=int(seen.get("restarts", 0)), exit_code=seen.get("exit_code"),
            )  # fmt: skip
            out.running += 1 if state == "RUNNING" else 0
        return out

    async def List(
        self, request: apps_pb2.ListAppsRequest, context: grpc.aio.ServicerContext
    ) -> apps_pb2.ListAppsResponse:
        await self._admin(context)
        apps = await asyncio.to_thread(list_apps, self.core.store)
        return apps_pb2.ListAppsResponse(apps=[self._status(d) for d in apps])

    async def Status(
        self, request: apps_pb2.AppRequest, context: grpc.aio.ServicerContext
    ) -> apps_pb2.AppStatus:
        await self._admin(context)
        return self._status(await self._app(request.name, context))

    async def Explain(
        self, request: apps_pb2.AppRequest, context: grpc.aio.ServicerContext
    ) -> apps_pb2.AppExplanation:
        await self._admin(context)
        deployed = await self._app(request.name, context)
        store = self.core.store
        live = set(self.core.streams)
        nodes = []
        for row in store.list_nodes(include_revoked=False):
            node = placement_node(row)
            if row.node_id not in live:
                node = replace(node, health="disconnected")
            nodes.append(node)
        refusals = self.runner.loop.reconciler.refusals
        state = ClusterState(tuple(nodes), read_allocations(store), refusals)
        plan = schedule(state, deployed.spec)
        lines = plan.lines()
        if plan.empty:
            lines.append("nothing to do: placed as the spec says")
        return apps_pb2.AppExplanation(
            name=deployed.spec.name,
            plan=lines,
            events=list(self.runner.loop.events.get(deployed.spec.name, ())),
        )

    async def Remove(
        self, request: apps_pb2.AppRequest, context: grpc.aio.ServicerContext
    ) -> apps_pb2.AppStatus:
        who = await self._admin(context)
        deployed = await self._app(request.name, context)
        _, fence = self.runner.fence()
        try:
            delete_app(self.core.store, deployed.spec.name, fence)
        except Conflict:
            await context.abort(grpc.StatusCode.ABORTED, f"app {request.name} changed: try again")
        log.info("app %s removed by %s", deployed.spec.name, who)
        self.runner.loop.event(deployed.spec.name, f"removed by {who}")
        status = self._status(deployed)
        await self.runner.tick()
        status.removed = True
        status.events[:] = list(self.runner.loop.events.get(deployed.spec.name, ()))
        return status
