# mypy: ignore-errors
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PolicyDocument(_message.Message):
    __slots__ = ("text", "filename")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    text: str
    filename: str
    def __init__(self, text: _Optional[str] = ..., filename: _Optional[str] = ...) -> None: ...

class NodePolicySummary(_message.Message):
    __slots__ = ("node", "instance_id", "egress_rules", "ingress_rules")
    NODE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    EGRESS_RULES_FIELD_NUMBER: _ClassVar[int]
    INGRESS_RULES_FIELD_NUMBER: _ClassVar[int]
    node: str
    instance_id: int
    egress_rules: int
    ingress_rules: int
    def __init__(self, node: _Optional[str] = ..., instance_id: _Optional[int] = ..., egress_rules: _Optional[int] = ..., ingress_rules: _Optional[int] = ...) -> None: ...

class PolicyCheckResult(_message.Message):
    __slots__ = ("ok", "error", "warnings", "version", "rules", "tests", "nodes")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    version: int
    rules: int
    tests: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodePolicySummary]
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ..., rules: _Optional[int] = ..., tests: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodePolicySummary, _Mapping]]] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PolicyState(_message.Message):
    __slots__ = ("installed", "version", "text", "filename", "applied_at", "applied_by", "generation", "nodes")
    INSTALLED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_BY_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    installed: bool
    version: int
    text: str
    filename: str
    applied_at: str
    applied_by: str
    generation: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodePolicySummary]
    def __init__(self, installed: _Optional[bool] = ..., version: _Optional[int] = ..., text: _Optional[str] = ..., filename: _Optional[str] = ..., applied_at: _Optional[str] = ..., applied_by: _Optional[str] = ..., generation: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodePolicySummary, _Mapping]]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("src", "dst", "protocol", "port", "policy")
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    src: str
    dst: str
    protocol: str
    port: int
    policy: PolicyDocument
    def __init__(self, src: _Optional[str] = ..., dst: _Optional[str] = ..., protocol: _Optional[str] = ..., port: _Optional[int] = ..., policy: _Optional[_Union[PolicyDocument, _Mapping]] = ...) -> None: ...

class SkippedRule(_message.Message):
    __slots__ = ("rule", "line", "why")
    RULE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    rule: str
    line: int
    why: str
    def __init__(self, rule: _Optional[str] = ..., line: _Optional[int] = ..., why: _Optional[str] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("verdict", "rule", "line", "reason", "src", "dst", "instance_id", "protocol", "port", "skipped", "policy_version")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    verdict: str
    rule: str
    line: int
    reason: str
    src: str
    dst: str
    instance_id: int
    protocol: str
    port: int
    skipped: _containers.RepeatedCompositeFieldContainer[SkippedRule]
    policy_version: int
    def __init__(self, verdict: _Optional[str] = ..., rule: _Optional[str] = ..., line: _Optional[int] = ..., reason: _Optional[str] = ..., src: _Optional[str] = ..., dst: _Optional[str] = ..., instance_id: _Optional[int] = ..., protocol: _Optional[str] = ..., port: _Optional[int] = ..., skipped: _Optional[_Iterable[_Union[SkippedRule, _Mapping]]] = ..., policy_version: _Optional[int] = ...) -> None: ...
