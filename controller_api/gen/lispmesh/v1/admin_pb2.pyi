# mypy: ignore-errors
from controller_api.gen.lispmesh.v1 import common_pb2 as _common_pb2
from controller_api.gen.lispmesh.v1 import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ControllerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ControllerReplica(_message.Message):
    __slots__ = ("name", "api_address", "leader")
    NAME_FIELD_NUMBER: _ClassVar[int]
    API_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    name: str
    api_address: str
    leader: bool
    def __init__(self, name: _Optional[str] = ..., api_address: _Optional[str] = ..., leader: _Optional[bool] = ...) -> None: ...

class ControllerStatusInfo(_message.Message):
    __slots__ = ("store", "store_revision", "store_health", "replica", "leader", "leader_term", "replicas", "leader_last_round")
    STORE_FIELD_NUMBER: _ClassVar[int]
    STORE_REVISION_FIELD_NUMBER: _ClassVar[int]
    STORE_HEALTH_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_TERM_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LEADER_LAST_ROUND_FIELD_NUMBER: _ClassVar[int]
    store: str
    store_revision: int
    store_health: str
    replica: str
    leader: str
    leader_term: int
    replicas: _containers.RepeatedCompositeFieldContainer[ControllerReplica]
    leader_last_round: str
    def __init__(self, store: _Optional[str] = ..., store_revision: _Optional[int] = ..., store_health: _Optional[str] = ..., replica: _Optional[str] = ..., leader: _Optional[str] = ..., leader_term: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ControllerReplica, _Mapping]]] = ..., leader_last_round: _Optional[str] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "name", "instance_id", "eid_prefixes", "tags", "state", "enrolled_at", "revoked_at", "last_seen", "config_version", "applied_version", "uplinks", "token_id", "cert_not_after", "identity", "attestation", "attested_at", "ek_subject", "ek_certificate_subject")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    EID_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_VERSION_FIELD_NUMBER: _ClassVar[int]
    UPLINKS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    CERT_NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    ATTESTED_AT_FIELD_NUMBER: _ClassVar[int]
    EK_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    EK_CERTIFICATE_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    instance_id: int
    eid_prefixes: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    state: str
    enrolled_at: str
    revoked_at: str
    last_seen: str
    config_version: int
    applied_version: int
    uplinks: _containers.RepeatedCompositeFieldContainer[_common_pb2.Uplink]
    token_id: str
    cert_not_after: str
    identity: str
    attestation: str
    attested_at: str
    ek_subject: str
    ek_certificate_subject: str
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ..., instance_id: _Optional[int] = ..., eid_prefixes: _Optional[_Iterable[str]] = ..., tags: _Optional[_Iterable[str]] = ..., state: _Optional[str] = ..., enrolled_at: _Optional[str] = ..., revoked_at: _Optional[str] = ..., last_seen: _Optional[str] = ..., config_version: _Optional[int] = ..., applied_version: _Optional[int] = ..., uplinks: _Optional[_Iterable[_Union[_common_pb2.Uplink, _Mapping]]] = ..., token_id: _Optional[str] = ..., cert_not_after: _Optional[str] = ..., identity: _Optional[str] = ..., attestation: _Optional[str] = ..., attested_at: _Optional[str] = ..., ek_subject: _Optional[str] = ..., ek_certificate_subject: _Optional[str] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("include_revoked",)
    INCLUDE_REVOKED_FIELD_NUMBER: _ClassVar[int]
    include_revoked: bool
    def __init__(self, include_revoked: _Optional[bool] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ...) -> None: ...

class DescribeNodeRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class NodeDetail(_message.Message):
    __slots__ = ("node", "certificate_fingerprint", "certificate_not_after", "status_json", "metrics_json", "apply_error")
    NODE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    STATUS_JSON_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    APPLY_ERROR_FIELD_NUMBER: _ClassVar[int]
    node: NodeInfo
    certificate_fingerprint: str
    certificate_not_after: str
    status_json: str
    metrics_json: str
    apply_error: str
    def __init__(self, node: _Optional[_Union[NodeInfo, _Mapping]] = ..., certificate_fingerprint: _Optional[str] = ..., certificate_not_after: _Optional[str] = ..., status_json: _Optional[str] = ..., metrics_json: _Optional[str] = ..., apply_error: _Optional[str] = ...) -> None: ...

class RevokeNodeRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("ttl_seconds", "max_uses", "tags", "description")
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_USES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ttl_seconds: float
    max_uses: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    description: str
    def __init__(self, ttl_seconds: _Optional[float] = ..., max_uses: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ...) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("token_id", "created_at", "expires_at", "max_uses", "uses", "tags", "description", "revoked_at", "state")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    MAX_USES_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    created_at: str
    expires_at: str
    max_uses: int
    uses: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    description: str
    revoked_at: str
    state: str
    def __init__(self, token_id: _Optional[str] = ..., created_at: _Optional[str] = ..., expires_at: _Optional[str] = ..., max_uses: _Optional[int] = ..., uses: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., revoked_at: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token", "token_secret")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_SECRET_FIELD_NUMBER: _ClassVar[int]
    token: TokenInfo
    token_secret: str
    def __init__(self, token: _Optional[_Union[TokenInfo, _Mapping]] = ..., token_secret: _Optional[str] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token_id",)
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    def __init__(self, token_id: _Optional[str] = ...) -> None: ...

class GetTopologyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Registration(_message.Message):
    __slots__ = ("eid", "rlocs", "expires_in")
    EID_FIELD_NUMBER: _ClassVar[int]
    RLOCS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    eid: _common_pb2.EidPrefix
    rlocs: _containers.RepeatedScalarFieldContainer[str]
    expires_in: float
    def __init__(self, eid: _Optional[_Union[_common_pb2.EidPrefix, _Mapping]] = ..., rlocs: _Optional[_Iterable[str]] = ..., expires_in: _Optional[float] = ...) -> None: ...

class TopologyNode(_message.Message):
    __slots__ = ("node", "registrations", "peers", "peer_paths")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REGISTRATIONS_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    PEER_PATHS_FIELD_NUMBER: _ClassVar[int]
    node: NodeInfo
    registrations: _containers.RepeatedCompositeFieldContainer[Registration]
    peers: _containers.RepeatedScalarFieldContainer[str]
    peer_paths: _containers.RepeatedCompositeFieldContainer[_status_pb2.Peer]
    def __init__(self, node: _Optional[_Union[NodeInfo, _Mapping]] = ..., registrations: _Optional[_Iterable[_Union[Registration, _Mapping]]] = ..., peers: _Optional[_Iterable[str]] = ..., peer_paths: _Optional[_Iterable[_Union[_status_pb2.Peer, _Mapping]]] = ...) -> None: ...

class Topology(_message.Message):
    __slots__ = ("controller_address", "map_servers", "eid_pools", "nodes", "generated_at")
    CONTROLLER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MAP_SERVERS_FIELD_NUMBER: _ClassVar[int]
    EID_POOLS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    GENERATED_AT_FIELD_NUMBER: _ClassVar[int]
    controller_address: str
    map_servers: _containers.RepeatedScalarFieldContainer[str]
    eid_pools: _containers.RepeatedScalarFieldContainer[str]
    nodes: _containers.RepeatedCompositeFieldContainer[TopologyNode]
    generated_at: str
    def __init__(self, controller_address: _Optional[str] = ..., map_servers: _Optional[_Iterable[str]] = ..., eid_pools: _Optional[_Iterable[str]] = ..., nodes: _Optional[_Iterable[_Union[TopologyNode, _Mapping]]] = ..., generated_at: _Optional[str] = ...) -> None: ...

class GetAttestationPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetAttestationPolicyRequest(_message.Message):
    __slots__ = ("policy_json", "filename")
    POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    policy_json: str
    filename: str
    def __init__(self, policy_json: _Optional[str] = ..., filename: _Optional[str] = ...) -> None: ...

class AttestationPolicyInfo(_message.Message):
    __slots__ = ("policy_json", "source", "set_at", "set_by", "filename", "interval_seconds")
    POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SET_AT_FIELD_NUMBER: _ClassVar[int]
    SET_BY_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    policy_json: str
    source: str
    set_at: str
    set_by: str
    filename: str
    interval_seconds: float
    def __init__(self, policy_json: _Optional[str] = ..., source: _Optional[str] = ..., set_at: _Optional[str] = ..., set_by: _Optional[str] = ..., filename: _Optional[str] = ..., interval_seconds: _Optional[float] = ...) -> None: ...

class RotateCaRequest(_message.Message):
    __slots__ = ("finish", "force")
    FINISH_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    finish: bool
    force: bool
    def __init__(self, finish: _Optional[bool] = ..., force: _Optional[bool] = ...) -> None: ...

class CaStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CaInfo(_message.Message):
    __slots__ = ("fingerprint", "subject", "not_after", "issuing", "serves_tls", "nodes", "cross_signed_by")
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    ISSUING_FIELD_NUMBER: _ClassVar[int]
    SERVES_TLS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    CROSS_SIGNED_BY_FIELD_NUMBER: _ClassVar[int]
    fingerprint: str
    subject: str
    not_after: str
    issuing: bool
    serves_tls: bool
    nodes: int
    cross_signed_by: str
    def __init__(self, fingerprint: _Optional[str] = ..., subject: _Optional[str] = ..., not_after: _Optional[str] = ..., issuing: _Optional[bool] = ..., serves_tls: _Optional[bool] = ..., nodes: _Optional[int] = ..., cross_signed_by: _Optional[str] = ...) -> None: ...

class CaStatus(_message.Message):
    __slots__ = ("cas", "phase", "nodes_on_old_ca", "nodes_without_bundle", "distributing_since", "distribute_deadline", "waiting_for", "last_outcome")
    CAS_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    NODES_ON_OLD_CA_FIELD_NUMBER: _ClassVar[int]
    NODES_WITHOUT_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTING_SINCE_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTE_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_FIELD_NUMBER: _ClassVar[int]
    LAST_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    cas: _containers.RepeatedCompositeFieldContainer[CaInfo]
    phase: str
    nodes_on_old_ca: int
    nodes_without_bundle: int
    distributing_since: str
    distribute_deadline: str
    waiting_for: _containers.RepeatedScalarFieldContainer[str]
    last_outcome: str
    def __init__(self, cas: _Optional[_Iterable[_Union[CaInfo, _Mapping]]] = ..., phase: _Optional[str] = ..., nodes_on_old_ca: _Optional[int] = ..., nodes_without_bundle: _Optional[int] = ..., distributing_since: _Optional[str] = ..., distribute_deadline: _Optional[str] = ..., waiting_for: _Optional[_Iterable[str]] = ..., last_outcome: _Optional[str] = ...) -> None: ...
