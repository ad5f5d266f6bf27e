"""The PolicyAdmin gRPC service (policy.proto): check, apply, show and explain network policies.
Admin mTLS like the Admin service. A refused policy is an answer (ok=false and the one-line
reason), not an RPC error, so the CLI prints it as it is."""

from __future__ import annotations

import logging

import grpc

from controller_api.auth import Authenticator, Denied
from controller_api.core import ControllerCore
from controller_api.gen.lispmesh.v1 import policy_pb2, policy_pb2_grpc
from controller_api.policies import explain_reply
from controller_api.policy import Evaluator, PolicyError, parse_policy

log = logging.getLogger("lispmesh.controller.policy")

MAX_POLICY_BYTES = 1 << 20


class PolicyService(policy_pb2_grpc.PolicyAdminServicer):
    def __init__(self, core: ControllerCore, auth: Authenticator) -> None:
        self.core = core
        self.auth = auth

    async def _admin(self, context: grpc.aio.ServicerContext) -> str:
        try:
            return self.auth.admin(context)
        except Denied as denied:
            await context.abort(denied.code, denied.message)
            raise

    async def _size(
        self, doc: policy_pb2.PolicyDocument, context: grpc.aio.ServicerContext
    ) -> None:
        if len(doc.text.encode()) > MAX_POLICY_BYTES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"policy larger than {MAX_POLICY_BYTES} bytes"
            )

    async def Check(
        self, request: policy_pb2.PolicyDocument, context: grpc.aio.ServicerContext
    ) -> policy_pb2.PolicyCheckResult:
        await self._admin(context)
        await self._size(request, context)
        try:
            checked = self.core.policies.check(request.text, request.filename)
        except PolicyError as exc:
            return policy_pb2.PolicyCheckResult(ok=False, error=str(exc))
        doc = checked.evaluator.doc
        return policy_pb2.PolicyCheckResult(
            ok=True, warnings=checked.warnings, rules=len(doc.rules), tests=len(doc.tests),
            nodes=checked.summary(),
        )  # fmt: skip

    async def Apply(
        self, request: policy_pb2.PolicyDocument, context: grpc.aio.ServicerContext
    ) -> policy_pb2.PolicyCheckResult:
        who = await self._admin(context)
        await self._size(request, context)
        try:
            checked, version = self.core.apply_policy(request.text, request.filename, who)
        except PolicyError as exc:
            log.warning("policy %s refused (from %s): %s", request.filename, who, exc)
            return policy_pb2.PolicyCheckResult(ok=False, error=str(exc))
        doc = checked.evaluator.doc
        return policy_pb2.PolicyCheckResult(
            ok=True, warnings=checked.warnings, version=version, rules=len(doc.rules),
            tests=len(doc.tests), nodes=checked.summary(),
        )  # fmt: skip

    async def Get(
        self, request: policy_pb2.GetPolicyRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.PolicyState:
        await self._admin(context)
        return self.core.policies.state()

    async def Explain(
        self, request: policy_pb2.ExplainRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.Explanation:
        await self._admin(context)
        policies = self.core.policies
        try:
            if request.HasField("policy") and request.policy.text:
                await self._size(request.policy, context)
                doc = parse_policy(request.policy.text, request.policy.filename or "policy.yml")
                evaluator: Evaluator | None = Evaluator(doc, policies.inventory())
                version = 0
            else:
                evaluator = policies.evaluator()
                version = policies.row.version if policies.row else 0
            if evaluator is None:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "no policy is applied (every node allows everything); "
                    "give a policy file to explain against",
                )
                raise AssertionError("not reached")
            port = request.port if request.port else None
            explanation = evaluator.explain(request.src, request.dst, request.protocol, port)
        except PolicyError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        return explain_reply(explanation, version)
