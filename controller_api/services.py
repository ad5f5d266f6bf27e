"""The gRPC services of the controller (grpc.aio): thin wrappers over `ControllerCore`.

Each handler authenticates first (Enrollment excepted: the token or onboarding certificate is
its credential), and turns refusals into gRPC status codes with a one-line message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import json_format

from controller_api import ca_admin, pki
from controller_api.attestation import AttestationRefused, TpmClock
from controller_api.attestation_policies import AttestationPolicies, PolicyInForce
from controller_api.auth import Authenticator, Denied
from controller_api.core import ControllerCore
from controller_api.enrollment import Enroller, EnrollmentError
from controller_api.gen.lispmesh.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    attestation_pb2,
    attestation_pb2_grpc,
    config_pb2,
    config_pb2_grpc,
    enrollment_pb2,
    enrollment_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)
from controller_api.settings import rfc3339
from controller_api.store import StoreError
from controller_api.tokens import new_token
from controller_api.tpm_records import Attestation, TpmNode
from controller_api.tpm_verifier import TpmVerifier

log = logging.getLogger("lispmesh.controller")

_ENROLL_CODES = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "denied": grpc.StatusCode.PERMISSION_DENIED,
    "exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


async def _deny(context: grpc.aio.ServicerContext, denied: Denied) -> None:
    await context.abort(denied.code, denied.message)


class EnrollmentService(enrollment_pb2_grpc.EnrollmentServicer):
    def __init__(self, core: ControllerCore, enroller: Enroller) -> None:
        self.core = core
        self.enroller = enroller

    async def Enroll(
        self, request: enrollment_pb2.EnrollRequest, context: grpc.aio.ServicerContext
    ) -> enrollment_pb2.EnrollResponse:
        try:
            response = self.enroller.enroll(request)
        except EnrollmentError as exc:
            log.warning("enrollment refused (%s): %s", context.peer(), exc)
            await context.abort(_ENROLL_CODES[exc.code], str(exc))
            raise  # not reached: abort raises
        log.info(
            "enrolled node %s (%s): %s", response.node_name, response.node_id,
            ", ".join(p.prefix for p in response.eid_prefixes),
        )  # fmt: skip
        node = self.core.store.get_node(response.node_id)
        assert node is not None
        self.core.node_enrolled(node)
        return response

    async def StartTpmEnrollment(
        self, request: enrollment_pb2.TpmIdentity, context: grpc.aio.ServicerContext
    ) -> enrollment_pb2.TpmChallenge:
        try:
            return self.enroller.tpm.start(request)
        except AttestationRefused as exc:
            log.warning("TPM enrollment refused (%s): %s", context.peer(), exc)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"TPM: {exc}")
            raise  # not reached: abort raises


class AttestationService(attestation_pb2_grpc.AttestationServicer):
    """Attestation rounds of enrolled TPM-backed nodes (the agent runs one on each connection)."""

    def __init__(self, core: ControllerCore, auth: Authenticator, verifier: TpmVerifier) -> None:
        self.core = core
        self.auth = auth
        self.verifier = verifier

    async def _tpm_node(self, context: grpc.aio.ServicerContext) -> tuple[Any, TpmNode]:
        try:
            node = self.auth.node(context)
        except Denied as denied:
            await _deny(context, denied)
            raise
        tpm = self.core.tpm_records.get(node.node_id)
        if tpm is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"node {node.name} did not enroll with a TPM: nothing to attest",
            )
        assert tpm is not None
        return node, tpm

    async def Challenge(
        self,
        request: attestation_pb2.AttestationChallengeRequest,
        context: grpc.aio.ServicerContext,
    ) -> attestation_pb2.AttestationChallenge:
        node, _ = await self._tpm_node(context)
        return self.verifier.challenge(node.node_id)

    async def Attest(
        self, request: attestation_pb2.TpmQuote, context: grpc.aio.ServicerContext
    ) -> attestation_pb2.AttestationResult:
        node, tpm = await self._tpm_node(context)
        previous = TpmClock(*tpm.clock) if tpm.clock is not None else None
        now = self.core.clock()
        try:
            verified = self.verifier.attest(
                node.node_id, bytes.fromhex(tpm.ak_public), previous, request
            )
        except AttestationRefused as exc:
            result = Attestation(now, False, str(exc), exc.check)
            clock = None
            log.warning("node %s failed attestation: %s", node.name, exc)
        else:
            result = Attestation(now, True)
            clock = (verified.clock.reset_count, verified.clock.restart_count, verified.clock.clock)
            if tpm.quarantined:
                log.info("node %s attested again: out of quarantine", node.name)
        self.core.record_attestation(node, result, clock, was_quarantined=tpm.quarantined)
        return attestation_pb2.AttestationResult(
            ok=result.ok, reason=result.reason, attested_at=rfc3339(now)
        )


class NodeConfigService(config_pb2_grpc.NodeConfigServicer):
    def __init__(self, core: ControllerCore, auth: Authenticator, enroller: Enroller) -> None:
        self.core = core
        self.auth = auth
        self.enroller = enroller

    async def Watch(
        self, request: config_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[config_pb2.DesiredState]:
        try:
            node = self.auth.node(context)
        except Denied as denied:
            await _deny(context, denied)
            return
        core, node_id = self.core, node.node_id
        known = request.known_version
        if core.unavailable is not None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, core.unavailable)
        # Open the stream now: a node that already has the current version gets no message
        # until the next change, and its agent waits for the stream to open before it counts
        # itself connected (and starts reporting status).
        await context.send_initial_metadata(())
        ended = core.open_watch(node_id)
        core.store.touch(node_id, core.clock())
        log.info("node %s connected (has version %d)", node.name, known)
        try:
            while True:
                row = core.store.get_node(node_id)
                assert row is not None
                quarantine = core.quarantine(row)
                if quarantine is not None:
                    # No new desired state for a node that failed attestation: it keeps
                    # retrying (attesting on each connection) and recovers when it passes.
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, quarantine)
                state = core.desired_state(row)
                if state.version != known or row.revoked:
                    yield state
                    known = state.version
                if row.revoked:
                    message = f"node {row.name} was revoked at {rfc3339(row.revoked_at)}"
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
                await core.wait_change(node_id, core.stream_cycle, ended)
                if ended.is_set() and core.unavailable is not None:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, core.unavailable)
                if ended.is_set():
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"node {row.name}: ended by a newer Watch stream (at most "
                        f"{core.settings.max_watch_streams} per node)",
                    )
        finally:
            core.close_watch(node_id, ended)
            # Seen until now: its disconnection (and an app's lost_after) counts from here,
            # not from its last status report, up to 30 s earlier.
            with contextlib.suppress(Exception):
                core.store.touch(node_id, core.clock())
            log.info("node %s disconnected", node.name)

    async def Ack(
        self, request: config_pb2.AckRequest, context: grpc.aio.ServicerContext
    ) -> config_pb2.AckResponse:
        try:
            node = self.auth.node(context)
        except Denied as denied:
            await _deny(context, denied)
            raise
        error = "" if request.ok else (request.error or "failed")[:500]
        self.core.store.record_ack(node.node_id, request.version, error, self.core.clock())
        ca_admin.maybe_switch(self.core)  # during a CA rotation: was this the last node?
        if error:
            log.warning("node %s could not apply version %d: %s", node.name, request.version, error)
        return config_pb2.AckResponse()

    async def Renew(
        self, request: config_pb2.RenewRequest, context: grpc.aio.ServicerContext
    ) -> config_pb2.RenewResponse:
        try:
            node = self.auth.node(context)
        except Denied as denied:
            await _deny(context, denied)
            raise
        try:
            cert, previous_until = self.enroller.renew(node, request.csr_der)
        except EnrollmentError as exc:
            log.warning("renewal for node %s refused: %s", node.name, exc)
            await context.abort(_ENROLL_CODES[exc.code], str(exc))
            raise  # not reached: abort raises
        log.info(
            "node %s renewed its certificate (valid until %s; the old one until %s)",
            node.name, rfc3339(cert.not_valid_after_utc.timestamp()), rfc3339(previous_until),
        )  # fmt: skip
        return config_pb2.RenewResponse(
            certificate_pem=pki.pem(cert),
            ca_certificate_pem=self.enroller.pki.ca_pem,
            previous_valid_until=rfc3339(previous_until),
        )


class StatusService(status_pb2_grpc.StatusServicer):
    def __init__(self, core: ControllerCore, auth: Authenticator) -> None:
        self.core = core
        self.auth = auth

    async def Report(
        self, request: status_pb2.StatusReport, context: grpc.aio.ServicerContext
    ) -> status_pb2.ReportAck:
        try:
            node = self.auth.node(context)
        except Denied as denied:
            await _deny(context, denied)
            raise
        status = json_format.MessageToDict(request, preserving_proto_field_name=True)
        self.core.store.record_status(node.node_id, status, self.core.clock())
        return status_pb2.ReportAck()

    async def ReportMetrics(
        self, request: status_pb2.Metrics, context: grpc.aio.ServicerContext
    ) -> status_pb2.ReportAck:
        try:
            node = self.auth.node(context)
        except Denied as denied:
            await _deny(context, denied)
            raise
        metrics = json_format.MessageToDict(request, preserving_proto_field_name=True)
        self.core.store.record_metrics(node.node_id, metrics, self.core.clock())
        return status_pb2.ReportAck()


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(
        self,
        core: ControllerCore,
        auth: Authenticator,
        ca_pin: Callable[[], str],
        verifier: TpmVerifier,
    ) -> None:
        self.core = core
        self.auth = auth
        self.ca_pin = ca_pin
        self.verifier = verifier
        # Set by the server once it knows its replica set-up (controller_api/replicas.py).
        self.controller_status: Callable[[], admin_pb2.ControllerStatusInfo] | None = None

    async def ControllerStatus(
        self, request: admin_pb2.ControllerStatusRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ControllerStatusInfo:
        await self._admin(context)
        if self.controller_status is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the controller is starting")
        assert self.controller_status is not None
        return await asyncio.to_thread(self.controller_status)

    async def RotateCa(
        self, request: admin_pb2.RotateCaRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CaStatus:
        who = await self._admin(context)
        try:
            return ca_admin.rotate(self.core, request.finish, request.force, who)
        except StoreError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise  # not reached: abort raises

    async def GetCaStatus(
        self, request: admin_pb2.CaStatusRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CaStatus:
        await self._admin(context)
        try:
            return ca_admin.status(self.core)
        except StoreError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise

    async def _admin(self, context: grpc.aio.ServicerContext) -> str:
        try:
            return self.auth.admin(context)
        except Denied as denied:
            await _deny(context, denied)
            raise

    async def _node(self, name: str, context: grpc.aio.ServicerContext) -> Any:
        node = self.core.store.find_node(name)
        if node is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no node named {name!r}")
        return node

    async def ListNodes(
        self, request: admin_pb2.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListNodesResponse:
        await self._admin(context)
        nodes = self.core.store.list_nodes(include_revoked=request.include_revoked)
        return admin_pb2.ListNodesResponse(nodes=[self.core.node_info(n) for n in nodes])

    async def DescribeNode(
        self, request: admin_pb2.DescribeNodeRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.NodeDetail:
        await self._admin(context)
        return self.core.node_detail(await self._node(request.node, context))

    async def RevokeNode(
        self, request: admin_pb2.RevokeNodeRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.NodeInfo:
        who = await self._admin(context)
        node = await self._node(request.node, context)
        revoked = self.core.revoke(node)
        log.warning("node %s (%s) revoked by %s", node.name, node.node_id, who)
        return self.core.node_info(revoked)

    async def CreateToken(
        self, request: admin_pb2.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateTokenResponse:
        who = await self._admin(context)
        ttl = request.ttl_seconds or self.core.settings.token_ttl
        if ttl < 0 or ttl > 10 * 365 * 86400:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"ttl {ttl:g} s out of range")
        now = self.core.clock()
        token = new_token(self.ca_pin())
        row = self.core.store.add_token(
            token.token_id, token.secret_hash, now, now + ttl, request.max_uses or 1,
            tuple(request.tags), request.description[:200],
        )  # fmt: skip
        log.info("token %s created by %s (uses %d)", token.display, who, row.max_uses)
        return admin_pb2.CreateTokenResponse(
            token=self.core.token_info(row), token_secret=str(token)
        )

    async def ListTokens(
        self, request: admin_pb2.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListTokensResponse:
        await self._admin(context)
        tokens = self.core.store.list_tokens()
        return admin_pb2.ListTokensResponse(tokens=[self.core.token_info(t) for t in tokens])

    async def RevokeToken(
        self, request: admin_pb2.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.TokenInfo:
        who = await self._admin(context)
        token_id = request.token_id.removeprefix("lmj1.").split(".")[0].rstrip("…")
        row = self.core.store.revoke_token(token_id, self.core.clock())
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no token {request.token_id!r}")
        assert row is not None
        log.info("token lmj1.%s… revoked by %s", token_id, who)
        return self.core.token_info(row)

    async def GetTopology(
        self, request: admin_pb2.GetTopologyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Topology:
        await self._admin(context)
        return self.core.topology()

    async def GetAttestationPolicy(
        self, request: admin_pb2.GetAttestationPolicyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.AttestationPolicyInfo:
        await self._admin(context)
        return self._policy_info(self._policies().current())

    async def SetAttestationPolicy(
        self, request: admin_pb2.SetAttestationPolicyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.AttestationPolicyInfo:
        who = await self._admin(context)
        try:
            in_force = self._policies().set(
                request.policy_json, request.filename[:200], who, self.core.clock()
            )
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc).splitlines()[0])
            raise  # not reached: abort raises
        log.warning(
            "attestation policy set by %s (%s): PCRs %s quoted, golden values for PCRs %s",
            who, request.filename or "-", ",".join(map(str, in_force.policy.pcrs)),
            ",".join(map(str, sorted(in_force.policy.golden))) or "none",
        )  # fmt: skip
        return self._policy_info(in_force)

    def _policies(self) -> AttestationPolicies:
        assert self.verifier.policies is not None  # the controller always gives the store's
        return self.verifier.policies

    def _policy_info(self, in_force: PolicyInForce) -> admin_pb2.AttestationPolicyInfo:
        return admin_pb2.AttestationPolicyInfo(
            policy_json=in_force.policy.to_json(),
            source=in_force.source,
            set_at=rfc3339(in_force.set_at),
            set_by=in_force.set_by,
            filename=in_force.filename,
            interval_seconds=self.verifier.interval,
        )
