# mypy: ignore-errors
from controller_api.gen.lispmesh.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Peer(_message.Message):
    __slots__ = ("name", "eid_prefixes", "rloc", "path", "local_rloc", "rtt_ms", "encrypted", "rlocs", "packets_sent", "bytes_sent", "packets_received", "bytes_received", "last_key_exchange_ago")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EID_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    RLOC_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    LOCAL_RLOC_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_FIELD_NUMBER: _ClassVar[int]
    RLOCS_FIELD_NUMBER: _ClassVar[int]
    PACKETS_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    PACKETS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    LAST_KEY_EXCHANGE_AGO_FIELD_NUMBER: _ClassVar[int]
    name: str
    eid_prefixes: _containers.RepeatedScalarFieldContainer[str]
    rloc: str
    path: str
    local_rloc: str
    rtt_ms: float
    encrypted: bool
    rlocs: _containers.RepeatedCompositeFieldContainer[RlocState]
    packets_sent: int
    bytes_sent: int
    packets_received: int
    bytes_received: int
    last_key_exchange_ago: float
    def __init__(self, name: _Optional[str] = ..., eid_prefixes: _Optional[_Iterable[str]] = ..., rloc: _Optional[str] = ..., path: _Optional[str] = ..., local_rloc: _Optional[str] = ..., rtt_ms: _Optional[float] = ..., encrypted: _Optional[bool] = ..., rlocs: _Optional[_Iterable[_Union[RlocState, _Mapping]]] = ..., packets_sent: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., packets_received: _Optional[int] = ..., bytes_received: _Optional[int] = ..., last_key_exchange_ago: _Optional[float] = ...) -> None: ...

class RlocState(_message.Message):
    __slots__ = ("address", "up", "rtt_ms")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    address: str
    up: bool
    rtt_ms: float
    def __init__(self, address: _Optional[str] = ..., up: _Optional[bool] = ..., rtt_ms: _Optional[float] = ...) -> None: ...

class StatusReport(_message.Message):
    __slots__ = ("uplinks", "peers", "map_cache_size", "drops", "applied_version", "registered", "agent_version", "policy_json", "workloads", "workload_capacity")
    class DropsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    UPLINKS_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    MAP_CACHE_SIZE_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    uplinks: _containers.RepeatedCompositeFieldContainer[_common_pb2.Uplink]
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    map_cache_size: int
    drops: _containers.ScalarMap[str, int]
    applied_version: int
    registered: bool
    agent_version: str
    policy_json: str
    workloads: _containers.RepeatedCompositeFieldContainer[WorkloadStatus]
    workload_capacity: WorkloadCapacity
    def __init__(self, uplinks: _Optional[_Iterable[_Union[_common_pb2.Uplink, _Mapping]]] = ..., peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ..., map_cache_size: _Optional[int] = ..., drops: _Optional[_Mapping[str, int]] = ..., applied_version: _Optional[int] = ..., registered: _Optional[bool] = ..., agent_version: _Optional[str] = ..., policy_json: _Optional[str] = ..., workloads: _Optional[_Iterable[_Union[WorkloadStatus, _Mapping]]] = ..., workload_capacity: _Optional[_Union[WorkloadCapacity, _Mapping]] = ...) -> None: ...

class WorkloadStatus(_message.Message):
    __slots__ = ("name", "app", "replica", "state", "eids", "last_error", "version", "memory_bytes", "cpu_seconds", "restarts", "image_digest", "exit_code")
    NAME_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EIDS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    app: str
    replica: int
    state: str
    eids: _containers.RepeatedScalarFieldContainer[str]
    last_error: str
    version: str
    memory_bytes: int
    cpu_seconds: float
    restarts: int
    image_digest: str
    exit_code: int
    def __init__(self, name: _Optional[str] = ..., app: _Optional[str] = ..., replica: _Optional[int] = ..., state: _Optional[str] = ..., eids: _Optional[_Iterable[str]] = ..., last_error: _Optional[str] = ..., version: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., cpu_seconds: _Optional[float] = ..., restarts: _Optional[int] = ..., image_digest: _Optional[str] = ..., exit_code: _Optional[int] = ...) -> None: ...

class WorkloadCapacity(_message.Message):
    __slots__ = ("memory_bytes", "millicpu", "disk_bytes", "kinds", "hypervisors")
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MILLICPU_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    HYPERVISORS_FIELD_NUMBER: _ClassVar[int]
    memory_bytes: int
    millicpu: int
    disk_bytes: int
    kinds: _containers.RepeatedScalarFieldContainer[str]
    hypervisors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, memory_bytes: _Optional[int] = ..., millicpu: _Optional[int] = ..., disk_bytes: _Optional[int] = ..., kinds: _Optional[_Iterable[str]] = ..., hypervisors: _Optional[_Iterable[str]] = ...) -> None: ...

class Metrics(_message.Message):
    __slots__ = ("counters", "cpu_seconds", "rss_bytes", "uptime_seconds")
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    counters: _containers.ScalarMap[str, int]
    cpu_seconds: float
    rss_bytes: int
    uptime_seconds: float
    def __init__(self, counters: _Optional[_Mapping[str, int]] = ..., cpu_seconds: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., uptime_seconds: _Optional[float] = ...) -> None: ...

class ReportAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
