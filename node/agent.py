"""The node agent: keeps this node in the mesh the controller describes.

It runs `mesh.node.NodeRuntime` in-process, fed by the controller's Watch stream; every applied
desired state is checkpointed, so after a reboot with the controller unreachable the node comes
back from its checkpoint. While the controller is unreachable it retries with exponential
backoff and full jitter, and says so in its status (`lispmesh node status`, section `agent`).
It reports its state to the controller when that changes, and its metrics periodically.
A revocation stops the runtime, forgets the checkpoint and ends the agent (exit code 78, which
the systemd unit does not restart). It renews its certificate at 2/3 of its lifetime
(node/renewal.py), then reconnects with the new one and the runtime signs with the new key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, replace
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509

from common.ca_trust import TrustError
from controller_api.client import ControllerUnreachable, aio_channel, explain
from controller_api.gen.lispmesh.v1 import (
    attestation_pb2,
    attestation_pb2_grpc,
    config_pb2,
    config_pb2_grpc,
    status_pb2_grpc,
)
from controller_api.settings import rfc3339
from mesh.config import NodeConfig
from mesh.control import ControlServer
from mesh.node import NodeRuntime, NodeSetupError
from node import telemetry, trust
from node.backoff import Backoff
from node.desired import DesiredStateError, LocalFacts, to_node_config
from node.node_key import NodeKey
from node.renewal import RenewalError, RenewalSchedule, renew_certificate
from node.state import Enrollment, StateDir
from node.tpm_evidence import DEFAULT_EVENT_LOG, TpmWitness
from node.uplinks import as_rlocs, discover

log = logging.getLogger("lispmesh.agent")

EXIT_REVOKED = 78  # EX_CONFIG: the systemd unit's RestartPreventExitStatus
SETUP_WAIT = 10.0  # seconds a new runtime may take to open its TUN and sockets


@dataclass(frozen=True)
class AgentOptions:
    state_dir: Path
    run_dir: Path
    tun: str = "lm0"
    uplinks: tuple[str, ...] = ()
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    status_interval: float = 1.0  # how often the state is compared with what was last sent
    volatile_interval: float = 10.0  # RTTs and traffic counters: refreshed at most this often
    metrics_interval: float = 30.0
    renew_backoff_base: float = 5.0
    renew_backoff_cap: float = 3600.0
    renew_recheck: float = 600.0  # the longest single wait for the renewal time (clock jumps)
    event_log: Path | None = DEFAULT_EVENT_LOG  # sent with each TPM quote
    metrics_listen: str | None = None  # Prometheus /metrics, HOST:PORT (opt-in)
    workloads_dir: Path | None = None  # supervise the workloads there (node/workloads; opt-in)
    workload_interval: float = 1.0
    workload_prefix: str = "lm-"  # runc ids and netns names (tests and labs: one per node)
    workload_runc_root: Path | None = None


class Revoked(Exception):
    pass


class AttestationFailed(Exception):
    """The controller refused this node's quote: it is quarantined until it attests again."""


class AgentRuntime(NodeRuntime):
    """The runtime, with the agent's section in its status."""

    def __init__(self, config: NodeConfig, agent: Agent) -> None:
        super().__init__(config)
        self.agent = agent

    def status(self) -> dict[str, Any]:
        status = super().status()
        status["agent"] = self.agent.status()
        return status


class Agent:
    def __init__(
        self, state: StateDir, enrollment: Enrollment, options: AgentOptions, key: NodeKey
    ) -> None:
        self.state = state
        self.enrollment = enrollment
        self.api_index = 0  # which of enrollment.controllers() the session uses now
        self.options = options
        self.key = key  # the node key (TPM or file): mTLS to the controller, key-exchange proofs
        self.started = time.monotonic()
        self.stop_event = asyncio.Event()
        self.exit_code = 0
        self.runtime: AgentRuntime | None = None
        self.runtime_task: asyncio.Task[None] | None = None
        self.standby: ControlServer | None = None  # answers `status` while no runtime runs
        self.desired: config_pb2.DesiredState | None = None
        self.applied_version = 0
        self.config_source = "none"
        self.apply_error = ""
        self.workloads: list[dict[str, Any]] = []  # as `lispmesh app ls --json` (workloads_dir)
        self.wanted_workloads: list[config_pb2.Workload] | None = None  # from the desired state
        self.workload_report: list[Any] = []  # status_pb2.WorkloadStatus, for the controller
        self.workload_capacity: Any = None  # status_pb2.WorkloadCapacity
        self.controller_state = "connecting"
        self.unreachable_since: float | None = None
        self.next_retry_at: float | None = None
        self.last_error = ""
        self.connected_at: float | None = None
        self.status_stub: Any = None
        self.force_report = True
        self.renewal: RenewalSchedule | None = None
        self.credentials_changed = asyncio.Event()  # a renewal: reconnect with the new pair
        self.renew_now = asyncio.Event()  # the issuing CA changed: renew before the schedule
        self.issuing_ca = ""  # the CA that issues now, as the last desired state said
        self.witness: TpmWitness | None = None
        self.attestation = ""  # TPM nodes: "ok at <time>" or "failed at <time>: <reason>"
        self.seal: Any = None  # TPM nodes: node.checkpoint_seal.CheckpointSeal
        if key.origin == "tpm":
            from node.checkpoint_seal import CheckpointSeal  # tpm2-pytss: TPM nodes only

            self.seal = CheckpointSeal(key.tpm)
            state.cipher = self.seal

    # ------------------------------------------------------------------ main

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        self.state.finish_renewal()
        await self._start_standby()
        # A sealed checkpoint is opened by the TPM: not in the event loop's thread.
        checkpoint = await loop.run_in_executor(None, self.state.load_checkpoint)
        if checkpoint is not None and not checkpoint.revoked:
            log.info("starting from the checkpoint (desired state v%d)", checkpoint.version)
            ok, error = await self._apply(checkpoint, checkpointed=True)
            if not ok:
                log.error("the checkpoint could not be applied: %s", error)
        tasks = [
            asyncio.create_task(self._controller_loop(), name="controller"),
            asyncio.create_task(self._report_loop(), name="reports"),
            asyncio.create_task(self._renewal_loop(), name="renewal"),
        ]
        if self.options.workloads_dir is not None:
            tasks.append(asyncio.create_task(self._workload_loop(), name="workloads"))
        try:
            await self.stop_event.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._stop_runtime()
            await self._stop_standby()
        return self.exit_code

    async def _workload_loop(self) -> None:
        """Restart crashed workloads and re-adopt running ones (they outlive the agent)."""
        from node.workloads.managed import ManagedWorkloads, node_capacity
        from node.workloads.supervisor import node_supervisor, supervise_once

        opts = self.options
        assert opts.workloads_dir is not None
        supervisor = node_supervisor(opts.workloads_dir, opts.workload_runc_root,
                                     opts.workload_prefix)  # fmt: skip
        managed = ManagedWorkloads(supervisor, opts.workload_prefix)
        while True:
            try:
                wanted = self.wanted_workloads
                if wanted is not None:  # the controller's list (the checkpoint's at first)
                    await asyncio.to_thread(managed.apply, wanted)
                self.workloads = await asyncio.to_thread(supervise_once, supervisor)
                self.workload_report = managed.report(self.workloads)
                if self.workload_capacity is None:
                    self.workload_capacity = await asyncio.to_thread(node_capacity, supervisor)
            except Exception as exc:  # one bad step must not end supervision
                log.error("workloads: %s", exc)
            await asyncio.sleep(opts.workload_interval)

    @property
    def api_address(self) -> str:
        controllers = self.enrollment.controllers()
        return controllers[self.api_index % len(controllers)]

    def _next_controller(self) -> None:
        """The controller in use failed: the next replica's turn (the list wraps around)."""
        controllers = self.enrollment.controllers()
        if len(controllers) > 1:
            self.api_index = (self.api_index + 1) % len(controllers)
            log.info("trying the controller replica at %s next", self.api_address)

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        if self.controller_state == "unreachable":
            retry = max(0.0, (self.next_retry_at or now) - now)
            line = (
                f"unreachable since {rfc3339(self.unreachable_since)}, "
                f"next retry in {retry:.1f} s ({self.last_error})"
            )
        elif self.controller_state == "connected":
            line = f"connected since {rfc3339(self.connected_at)}"
        else:
            line = self.controller_state
        return {
            "node_id": self.enrollment.node_id,
            "name": self.enrollment.name,
            "controller_address": self.api_address,
            "controller_addresses": list(self.enrollment.controllers()),
            "controller_state": self.controller_state,
            "controller": line,
            "unreachable_since": rfc3339(self.unreachable_since),
            "last_error": self.last_error,
            "applied_version": self.applied_version,
            "config_source": self.config_source,
            "apply_error": self.apply_error,
            "identity": self.key.origin,
            "identity_where": self.key.where,
            "attestation": self.attestation,
            "ek_subject": self.witness.ek_subject if self.witness is not None else "",
            **self._certificate_status(),
            **({"workloads": self.workloads} if self.options.workloads_dir else {}),
        }

    def _certificate_status(self) -> dict[str, Any]:
        schedule = self.renewal
        if schedule is None:
            return {}
        return {
            "cert_not_after": rfc3339(schedule.not_after),
            "cert_renew_at": rfc3339(schedule.next_attempt()),
            "cert_renewal_error": schedule.last_error,
        }

    # ------------------------------------------------------------------ the controller

    async def _controller_loop(self) -> None:
        backoff = Backoff(self.options.backoff_base, self.options.backoff_cap)
        while True:
            try:
                if await self._watch_until_renewed(backoff):
                    continue  # a new certificate: reconnect with it at once
                self._unreachable("the controller ended the stream")
            except Revoked as revoked:
                await self._revoked(str(revoked))
                return
            except AttestationFailed as failed:
                self._unreachable(f"quarantined by the controller: {failed}", "quarantined")
            except grpc.aio.AioRpcError as exc:
                details = exc.details() or ""
                if exc.code() == grpc.StatusCode.PERMISSION_DENIED and "revoked" in details:
                    await self._revoked(details)
                    return
                error = explain(exc, self.api_address)
                self._unreachable(str(error) if isinstance(error, ControllerUnreachable) else
                                  f"the controller refused: {error}")  # fmt: skip
            except Exception as exc:  # a bug here must not end the agent's controller session
                log.exception("controller session failed")
                self._unreachable(f"internal error: {type(exc).__name__}: {exc}")
            self._next_controller()
            delay = backoff.next()
            self.next_retry_at = time.monotonic() + delay
            await asyncio.sleep(delay)

    async def _watch_until_renewed(self, backoff: Backoff) -> bool:
        """Watch until the stream ends (False) or a renewal changed the credentials (True)."""
        watch = asyncio.create_task(self._watch(backoff))
        changed = asyncio.create_task(self.credentials_changed.wait())
        try:
            await asyncio.wait({watch, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watch, changed):
                task.cancel()
        if not watch.done() or watch.cancelled():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch
            self.credentials_changed.clear()
            return True
        watch.result()  # raises what ended the session
        return False

    async def _watch(self, backoff: Backoff) -> None:
        creds = self.key.channel_credentials(
            self.state.ca.read_bytes(), self.state.cert.read_bytes()
        )
        async with aio_channel(self.api_address, creds) as channel:
            interval = 0.0
            if self.key.origin == "tpm":
                interval = await self._attest(channel)
            config_stub: Any = config_pb2_grpc.NodeConfigStub(channel)  # type: ignore[no-untyped-call]
            call = config_stub.Watch(config_pb2.WatchRequest(known_version=self.applied_version))
            await call.wait_for_connection()
            self._connected()
            backoff.reset()
            self.status_stub = status_pb2_grpc.StatusStub(channel)  # type: ignore[no-untyped-call]
            tasks = [asyncio.create_task(self._follow(call, config_stub), name="watch")]
            if interval > 0:
                # The controller asks TPM nodes to attest again while connected: a PCR
                # extended at runtime is caught within one interval, not at the next reconnect.
                tasks.append(asyncio.create_task(self._attest_every(channel, interval)))
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.status_stub = None
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            for task in done:
                task.result()  # raises what ended the session

    async def _follow(self, call: Any, config_stub: Any) -> None:
        async for desired in call:
            if desired.revoked:
                raise Revoked(f"node {desired.node_name} was revoked by the controller")
            self._follow_controllers(desired)
            ok, error = self._follow_ca(desired)
            if ok:
                ok, error = await self._apply(desired)
            ack = config_pb2.AckRequest(version=desired.version, ok=ok, error=error)
            await config_stub.Ack(ack, timeout=5)
            self.force_report = True

    def _follow_controllers(self, desired: config_pb2.DesiredState) -> None:
        """Take the controller replicas the desired state lists (replicas added or removed
        since this node enrolled): the next failover goes along that list, the replica in use
        first, and the enrollment file keeps it for the next start. An empty list (one
        controller) leaves the enrollment's as it is."""
        listed = tuple(desired.controller_addresses)
        current = self.api_address
        if not listed or (
            listed == self.enrollment.api_addresses and current == self.enrollment.api_address
        ):
            return
        self.enrollment = replace(self.enrollment, api_address=current, api_addresses=listed)
        self.api_index = 0  # controllers() lists api_address, the one in use, first
        try:
            self.state.save_enrollment(self.enrollment)
        except OSError as exc:  # the list in memory still serves this run
            log.error("controller replicas not saved: %s", exc)
        log.info("controller replicas: %s", ", ".join(listed))

    def _follow_ca(self, desired: config_pb2.DesiredState) -> tuple[bool, str]:
        """Take the controller's CA bundle (a CA rotation) before the rest of the state: the
        controller lets a new CA issue only once every node acknowledged it, so a peer's
        new-CA certificate never reaches a node that does not trust that CA yet."""
        try:
            if trust.update_bundle(self.state, desired):
                log.info(
                    "CA bundle updated: %d CA(s) trusted", desired.ca_bundle_pem.count(b"BEGIN")
                )
                if self.runtime is not None:
                    self.runtime.reload_identity()
        except (TrustError, OSError) as exc:
            log.error("CA bundle refused: %s", exc)
            return False, f"CA bundle refused: {exc}"
        self.issuing_ca = desired.issuing_ca
        if trust.renew_for_new_issuer(self.state, desired.issuing_ca):
            self.renew_now.set()
        return True, ""

    async def _attest_every(self, channel: grpc.aio.Channel, interval: float) -> None:
        """Attest again every `interval` seconds (as the controller last said) until a round
        fails: AttestationFailed ends the session, and the node is quarantined."""
        while True:
            await asyncio.sleep(interval)
            interval = await self._attest(channel) or interval

    async def _attest(self, channel: grpc.aio.Channel) -> float:
        """One attestation round: the controller's nonce, this TPM's quote and event log. The
        interval the controller wants until the next round (0: none while connected)."""
        loop = asyncio.get_running_loop()
        if self.witness is None:
            self.witness = await loop.run_in_executor(
                None, TpmWitness, self.key.tpm, self.key.mesh, self.options.event_log
            )
        witness = self.witness
        stub: Any = attestation_pb2_grpc.AttestationStub(channel)  # type: ignore[no-untyped-call]
        challenge = await stub.Challenge(attestation_pb2.AttestationChallengeRequest(), timeout=10)
        quote = await loop.run_in_executor(
            None, witness.quote, challenge.nonce, list(challenge.pcrs)
        )
        result = await stub.Attest(quote, timeout=10)
        if not result.ok:
            self.attestation = f"failed at {result.attested_at}: {result.reason}"
            log.error("attestation failed: %s", result.reason)
            raise AttestationFailed(result.reason)
        if not self.attestation.startswith("ok"):
            log.info("attested to the controller (TPM quote and event log accepted)")
        self.attestation = f"ok at {result.attested_at}"
        await self._reseal(dict(quote.pcrs))
        return float(challenge.interval_seconds)

    async def _reseal(self, accepted: dict[int, bytes]) -> None:
        """The controller accepted these PCR values: seal the checkpoint to them (at once after
        a legitimate update, so the next start opens it; a no-op when they did not change)."""
        loop = asyncio.get_running_loop()
        try:
            resealed = await loop.run_in_executor(None, self.seal.reseal, accepted)
        except Exception as exc:  # the node runs on without a checkpoint rather than stop
            log.error("cannot seal the checkpoint to the TPM: %s", exc)
            return
        if resealed:
            log.info("checkpoint sealed to PCRs %s as attested", ",".join(map(str, accepted)))
            if self.desired is not None:
                self.state.save_checkpoint(self.desired)

    def _connected(self) -> None:
        if self.controller_state != "connected":
            log.info("connected to the controller at %s", self.api_address)
        self.controller_state = "connected"
        self.connected_at = time.time()
        self.unreachable_since = None
        self.next_retry_at = None
        self.last_error = ""
        self.force_report = True
        self._refresh_registrations()

    def _unreachable(self, why: str, state: str = "unreachable") -> None:
        if self.controller_state != state:
            log.warning("%s; retrying with backoff", why)
            self.unreachable_since = time.time()
        self.controller_state = state
        self.last_error = why

    async def _revoked(self, message: str) -> None:
        log.error("%s: leaving the mesh", message)
        self.controller_state = "revoked"
        await self._stop_runtime()
        self.state.forget_checkpoint()
        self.state.mark_revoked(message)
        self.exit_code = EXIT_REVOKED
        self.stop_event.set()

    def _refresh_registrations(self) -> None:
        """Register again now: a restarted controller's map-server starts empty."""
        xtr = self.runtime.xtr if self.runtime is not None else None
        for _, registration in getattr(xtr, "registrations", {}).values():
            with contextlib.suppress(Exception):
                registration.refresh_now(time.monotonic())

    # ------------------------------------------------------------------ renewal

    async def _renewal_loop(self) -> None:
        opts = self.options
        backoff = Backoff(opts.renew_backoff_base, opts.renew_backoff_cap)
        cert = x509.load_pem_x509_certificate(self.state.cert.read_bytes())
        self.renewal = schedule = RenewalSchedule.for_certificate(cert, backoff)
        while True:
            if self.renew_now.is_set():
                self.renew_now.clear()
                # Still from another CA (a desired state seen during a renewal asks again)?
                early = trust.renew_for_new_issuer(self.state, self.issuing_ca)
                if early and schedule.retry_at is None:  # after a failure, the backoff stands
                    schedule.renew_early(time.time())
                    log.info("certificate from a CA that no longer issues: renewing now")
            wait = schedule.next_attempt() - time.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.renew_now.wait(), min(wait, opts.renew_recheck))
                continue
            try:
                # A TPM node keeps its TPM-resident key: only its certificate is renewed.
                tpm_key = self.key if self.key.origin == "tpm" else None
                cert = await renew_certificate(
                    self.state, self.enrollment.name, self.api_address, tpm_key
                )
            except (RenewalError, OSError) as exc:
                retry = schedule.failed(time.time(), str(exc))
                log.warning("certificate renewal failed (%s); next try at %s", exc, rfc3339(retry))
                continue
            schedule.renewed(cert)
            log.info("certificate renewed: valid until %s", rfc3339(schedule.not_after))
            self._new_identity()

    def _new_identity(self) -> None:
        """The renewed pair is in place: the controller session and the runtime take it."""
        self.credentials_changed.set()
        self.force_report = True
        if self.runtime is not None:
            self.runtime.reload_identity()

    # ------------------------------------------------------------------ applying

    async def _local_facts(self, desired: config_pb2.DesiredState) -> LocalFacts:
        eids = [ip_network(p) for p in desired.eid_prefixes]
        # pyroute2's synchronous netlink socket cannot run inside the event loop's thread.
        uplinks = await asyncio.get_running_loop().run_in_executor(
            None, discover, self.options.uplinks, (self.options.tun,), eids
        )
        return LocalFacts(
            state_dir=self.state.path,
            run_dir=self.options.run_dir,
            key=self.state.key,
            cert=self.state.cert,
            ca=self.state.ca,
            tun=self.options.tun,
            rlocs=as_rlocs(uplinks),
            private_key=self.key.private_key if self.key.origin == "tpm" else None,
            metrics_listen=self.options.metrics_listen,
        )

    async def _apply(
        self, desired: config_pb2.DesiredState, checkpointed: bool = False
    ) -> tuple[bool, str]:
        if self.runtime is not None and self.desired == desired:
            return True, ""
        try:
            config = to_node_config(desired, await self._local_facts(desired))
            if self.runtime is None:
                await self._start_runtime(config)
            else:
                previous = self.desired
                await self._replace_runtime(config)
                if previous is None or list(previous.policies) != list(desired.policies):
                    self._forget_policy_denied()
        except (DesiredStateError, NodeSetupError) as exc:
            self.apply_error = str(exc)
            log.error("cannot apply desired state v%d: %s", desired.version, exc)
            return False, str(exc)
        if not checkpointed:
            self.state.save_checkpoint(desired)
        self.desired = desired
        self.wanted_workloads = list(desired.workloads)
        if desired.workloads and self.options.workloads_dir is None:
            log.error("%d workloads placed here, but this node runs none (--workloads-dir)",
                      len(desired.workloads))  # fmt: skip
        self.applied_version = desired.version
        self.config_source = "checkpoint" if checkpointed else "controller"
        self.apply_error = ""
        log.info("applied desired state v%d (%s)", desired.version, self.config_source)
        return True, ""

    def _forget_policy_denied(self) -> None:
        xtr = self.runtime.xtr if self.runtime is not None else None
        if xtr is not None:
            xtr.forget_policy_denied()

    async def _replace_runtime(self, config: NodeConfig) -> None:
        """The one place a running node takes a new config: in place when the runtime can
        (`NodeRuntime.reconfigure`), else by a restart of the runtime."""
        runtime = self.runtime
        reconfigure = getattr(runtime, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(config)
                return
            except NodeSetupError as exc:
                log.info("restarting the runtime: %s", exc)
        await self._stop_runtime()
        await self._start_runtime(config)

    async def _start_runtime(self, config: NodeConfig) -> None:
        await self._stop_standby()
        runtime = AgentRuntime(config, self)
        task = asyncio.create_task(runtime.run(), name="runtime")
        deadline = time.monotonic() + SETUP_WAIT
        while runtime.control_server is None and not task.done():
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        if task.done():
            error = task.exception()
            await self._start_standby()
            raise NodeSetupError(str(error) if error else "the runtime stopped at once")
        self.runtime, self.runtime_task = runtime, task
        task.add_done_callback(self._runtime_ended)
        # NodeRuntime installed its own SIGTERM/SIGINT handlers: make them stop the agent too.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)

    def _runtime_ended(self, task: asyncio.Task[None]) -> None:
        if task is not self.runtime_task:
            return  # stopped on purpose
        self.runtime = self.runtime_task = None
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.error("the node runtime failed: %s", error)
            self.apply_error = str(error)
        self.desired = None
        self.stop_event.set()

    async def _stop_runtime(self) -> None:
        runtime, task = self.runtime, self.runtime_task
        self.runtime = self.runtime_task = None
        if runtime is not None and task is not None:
            runtime.stop_event.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        self.desired = None

    # ------------------------------------------------------------------ standby status

    async def _start_standby(self) -> None:
        if self.standby is not None or self.runtime is not None:
            return
        path = self.options.run_dir / f"{self.enrollment.name}.sock"
        self.standby = ControlServer(path, self._standby_command)
        await self.standby.start()

    async def _stop_standby(self) -> None:
        standby, self.standby = self.standby, None
        if standby is not None:
            await standby.stop()

    def _standby_command(self, request: dict[str, Any]) -> dict[str, Any]:
        if request["command"] == "status":
            return {
                "name": self.enrollment.name,
                "roles": [],
                "uptime": round(time.monotonic() - self.started, 1),
                "encryption": True,
                "authenticated_key_exchange": True,
                "runtime_errors": {},
                "agent": self.status(),
            }
        if request["command"] == "stop":
            self.stop_event.set()
            return {"stopping": True}
        return {"error": "no runtime is running yet (waiting for a desired state)"}

    # ------------------------------------------------------------------ reports

    async def _report_loop(self) -> None:
        last: Any = None
        last_full: Any = None
        last_sent = 0.0
        last_metrics = 0.0
        while True:
            await asyncio.sleep(self.options.status_interval)
            stub, runtime = self.status_stub, self.runtime
            if stub is None or runtime is None:
                continue
            status = runtime.status()
            report = telemetry.status_report(status, self.applied_version)
            report.workloads.extend(self.workload_report)
            if self.workload_capacity is not None:
                report.workload_capacity.CopyFrom(self.workload_capacity)
            stable = telemetry.significant(report)
            # A state change (uplink, RLOC, peer, path) goes out at once; RTTs and traffic
            # counters alone at most every volatile_interval.
            volatile_due = time.monotonic() - last_sent >= self.options.volatile_interval
            measured = telemetry.without_ages(report)
            try:
                if self.force_report or stable != last or (volatile_due and measured != last_full):
                    await stub.Report(report, timeout=5)
                    last, self.force_report = stable, False
                    last_full, last_sent = measured, time.monotonic()
                now = time.monotonic()
                if now - last_metrics >= self.options.metrics_interval:
                    await stub.ReportMetrics(telemetry.metrics(status, self.started), timeout=5)
                    last_metrics = now
            except grpc.aio.AioRpcError as exc:
                log.debug("report failed: %s", exc.details())
            except Exception:  # a report is never worth the agent: log it and go on
                log.exception("status report failed")
