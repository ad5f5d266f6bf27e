# mypy: ignore-errors
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RenewRequest(_message.Message):
    __slots__ = ("csr_der",)
    CSR_DER_FIELD_NUMBER: _ClassVar[int]
    csr_der: bytes
    def __init__(self, csr_der: _Optional[bytes] = ...) -> None: ...

class RenewResponse(_message.Message):
    __slots__ = ("certificate_pem", "ca_certificate_pem", "previous_valid_until")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: bytes
    ca_certificate_pem: bytes
    previous_valid_until: str
    def __init__(self, certificate_pem: _Optional[bytes] = ..., ca_certificate_pem: _Optional[bytes] = ..., previous_valid_until: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("known_version",)
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    known_version: int
    def __init__(self, known_version: _Optional[int] = ...) -> None: ...

class MapServer(_message.Message):
    __slots__ = ("address", "port", "key_id", "site_key")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_KEY_FIELD_NUMBER: _ClassVar[int]
    address: str
    port: int
    key_id: int
    site_key: str
    def __init__(self, address: _Optional[str] = ..., port: _Optional[int] = ..., key_id: _Optional[int] = ..., site_key: _Optional[str] = ...) -> None: ...

class Security(_message.Message):
    __slots__ = ("encryption", "cipher_suite", "rekey_after_packets", "rekey_after_seconds")
    ENCRYPTION_FIELD_NUMBER: _ClassVar[int]
    CIPHER_SUITE_FIELD_NUMBER: _ClassVar[int]
    REKEY_AFTER_PACKETS_FIELD_NUMBER: _ClassVar[int]
    REKEY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    encryption: bool
    cipher_suite: str
    rekey_after_packets: int
    rekey_after_seconds: float
    def __init__(self, encryption: _Optional[bool] = ..., cipher_suite: _Optional[str] = ..., rekey_after_packets: _Optional[int] = ..., rekey_after_seconds: _Optional[float] = ...) -> None: ...

class Timers(_message.Message):
    __slots__ = ("register_interval", "register_ttl_minutes", "probe_interval", "probe_dead_after", "map_request_retry")
    REGISTER_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    REGISTER_TTL_MINUTES_FIELD_NUMBER: _ClassVar[int]
    PROBE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    PROBE_DEAD_AFTER_FIELD_NUMBER: _ClassVar[int]
    MAP_REQUEST_RETRY_FIELD_NUMBER: _ClassVar[int]
    register_interval: float
    register_ttl_minutes: int
    probe_interval: float
    probe_dead_after: float
    map_request_retry: float
    def __init__(self, register_interval: _Optional[float] = ..., register_ttl_minutes: _Optional[int] = ..., probe_interval: _Optional[float] = ..., probe_dead_after: _Optional[float] = ..., map_request_retry: _Optional[float] = ...) -> None: ...

class PolicyRule(_message.Message):
    __slots__ = ("id", "name", "action", "src", "dst", "protocol", "ports")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    action: str
    src: _containers.RepeatedScalarFieldContainer[str]
    dst: _containers.RepeatedScalarFieldContainer[str]
    protocol: int
    ports: _containers.RepeatedCompositeFieldContainer[PortRange]
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., action: _Optional[str] = ..., src: _Optional[_Iterable[str]] = ..., dst: _Optional[_Iterable[str]] = ..., protocol: _Optional[int] = ..., ports: _Optional[_Iterable[_Union[PortRange, _Mapping]]] = ...) -> None: ...

class PortRange(_message.Message):
    __slots__ = ("low", "high")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    low: int
    high: int
    def __init__(self, low: _Optional[int] = ..., high: _Optional[int] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("name", "version", "egress", "ingress", "policy_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EGRESS_FIELD_NUMBER: _ClassVar[int]
    INGRESS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    egress: _containers.RepeatedCompositeFieldContainer[PolicyRule]
    ingress: _containers.RepeatedCompositeFieldContainer[PolicyRule]
    policy_version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., egress: _Optional[_Iterable[_Union[PolicyRule, _Mapping]]] = ..., ingress: _Optional[_Iterable[_Union[PolicyRule, _Mapping]]] = ..., policy_version: _Optional[int] = ...) -> None: ...

class WorkloadResources(_message.Message):
    __slots__ = ("memory_bytes", "millicpu", "disk_bytes")
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MILLICPU_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    memory_bytes: int
    millicpu: int
    disk_bytes: int
    def __init__(self, memory_bytes: _Optional[int] = ..., millicpu: _Optional[int] = ..., disk_bytes: _Optional[int] = ...) -> None: ...

class Workload(_message.Message):
    __slots__ = ("name", "app", "replica", "image", "image_digest", "image_source", "kind", "resources", "ports", "env", "labels", "eids", "version")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EIDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    app: str
    replica: int
    image: str
    image_digest: str
    image_source: str
    kind: str
    resources: WorkloadResources
    ports: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    labels: _containers.ScalarMap[str, str]
    eids: _containers.RepeatedScalarFieldContainer[str]
    version: str
    def __init__(self, name: _Optional[str] = ..., app: _Optional[str] = ..., replica: _Optional[int] = ..., image: _Optional[str] = ..., image_digest: _Optional[str] = ..., image_source: _Optional[str] = ..., kind: _Optional[str] = ..., resources: _Optional[_Union[WorkloadResources, _Mapping]] = ..., ports: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., eids: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ...) -> None: ...

class DelegatedEid(_message.Message):
    __slots__ = ("node", "prefix")
    NODE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    node: str
    prefix: str
    def __init__(self, node: _Optional[str] = ..., prefix: _Optional[str] = ...) -> None: ...

class DesiredState(_message.Message):
    __slots__ = ("version", "node_id", "node_name", "instance_id", "eid_prefixes", "eid_addresses", "overlay_routes", "map_servers", "map_resolvers", "security", "timers", "revoked", "mtu", "policies", "workloads", "revoked_nodes", "retired_certificates", "rtrs", "ca_bundle_pem", "ca_cross_pem", "issuing_ca", "delegated_eids", "controller_addresses")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    EID_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    EID_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_ROUTES_FIELD_NUMBER: _ClassVar[int]
    MAP_SERVERS_FIELD_NUMBER: _ClassVar[int]
    MAP_RESOLVERS_FIELD_NUMBER: _ClassVar[int]
    SECURITY_FIELD_NUMBER: _ClassVar[int]
    TIMERS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_NODES_FIELD_NUMBER: _ClassVar[int]
    RETIRED_CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    RTRS_FIELD_NUMBER: _ClassVar[int]
    CA_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CROSS_PEM_FIELD_NUMBER: _ClassVar[int]
    ISSUING_CA_FIELD_NUMBER: _ClassVar[int]
    DELEGATED_EIDS_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    version: int
    node_id: str
    node_name: str
    instance_id: int
    eid_prefixes: _containers.RepeatedScalarFieldContainer[str]
    eid_addresses: _containers.RepeatedScalarFieldContainer[str]
    overlay_routes: _containers.RepeatedScalarFieldContainer[str]
    map_servers: _containers.RepeatedCompositeFieldContainer[MapServer]
    map_resolvers: _containers.RepeatedScalarFieldContainer[str]
    security: Security
    timers: Timers
    revoked: bool
    mtu: int
    policies: _containers.RepeatedCompositeFieldContainer[Policy]
    workloads: _containers.RepeatedCompositeFieldContainer[Workload]
    revoked_nodes: _containers.RepeatedScalarFieldContainer[str]
    retired_certificates: _containers.RepeatedScalarFieldContainer[str]
    rtrs: _containers.RepeatedCompositeFieldContainer[Rtr]
    ca_bundle_pem: bytes
    ca_cross_pem: bytes
    issuing_ca: str
    delegated_eids: _containers.RepeatedCompositeFieldContainer[DelegatedEid]
    controller_addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[int] = ..., node_id: _Optional[str] = ..., node_name: _Optional[str] = ..., instance_id: _Optional[int] = ..., eid_prefixes: _Optional[_Iterable[str]] = ..., eid_addresses: _Optional[_Iterable[str]] = ..., overlay_routes: _Optional[_Iterable[str]] = ..., map_servers: _Optional[_Iterable[_Union[MapServer, _Mapping]]] = ..., map_resolvers: _Optional[_Iterable[str]] = ..., security: _Optional[_Union[Security, _Mapping]] = ..., timers: _Optional[_Union[Timers, _Mapping]] = ..., revoked: _Optional[bool] = ..., mtu: _Optional[int] = ..., policies: _Optional[_Iterable[_Union[Policy, _Mapping]]] = ..., workloads: _Optional[_Iterable[_Union[Workload, _Mapping]]] = ..., revoked_nodes: _Optional[_Iterable[str]] = ..., retired_certificates: _Optional[_Iterable[str]] = ..., rtrs: _Optional[_Iterable[_Union[Rtr, _Mapping]]] = ..., ca_bundle_pem: _Optional[bytes] = ..., ca_cross_pem: _Optional[bytes] = ..., issuing_ca: _Optional[str] = ..., delegated_eids: _Optional[_Iterable[_Union[DelegatedEid, _Mapping]]] = ..., controller_addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class Rtr(_message.Message):
    __slots__ = ("name", "address")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class AckRequest(_message.Message):
    __slots__ = ("version", "ok", "error")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    version: int
    ok: bool
    error: str
    def __init__(self, version: _Optional[int] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class AckResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
