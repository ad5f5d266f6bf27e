# mypy: ignore-errors
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AppDocument(_message.Message):
    __slots__ = ("text", "filename")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    text: str
    filename: str
    def __init__(self, text: _Optional[str] = ..., filename: _Optional[str] = ...) -> None: ...

class DeployResult(_message.Message):
    __slots__ = ("ok", "error", "name", "version", "plan", "created")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    name: str
    version: str
    plan: _containers.RepeatedScalarFieldContainer[str]
    created: bool
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., plan: _Optional[_Iterable[str]] = ..., created: _Optional[bool] = ...) -> None: ...

class ListAppsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AppRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("replica", "node", "eids", "state", "running", "version", "last_error", "created_at", "restarts", "exit_code")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    EIDS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    replica: int
    node: str
    eids: _containers.RepeatedScalarFieldContainer[str]
    state: str
    running: bool
    version: str
    last_error: str
    created_at: str
    restarts: int
    exit_code: int
    def __init__(self, replica: _Optional[int] = ..., node: _Optional[str] = ..., eids: _Optional[_Iterable[str]] = ..., state: _Optional[str] = ..., running: _Optional[bool] = ..., version: _Optional[str] = ..., last_error: _Optional[str] = ..., created_at: _Optional[str] = ..., restarts: _Optional[int] = ..., exit_code: _Optional[int] = ...) -> None: ...

class AppStatus(_message.Message):
    __slots__ = ("name", "image", "kind", "replicas", "running", "version", "placed", "events", "deployed_at", "deployed_by", "labels", "removed")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLACED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYED_AT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYED_BY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    name: str
    image: str
    kind: str
    replicas: int
    running: int
    version: str
    placed: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    events: _containers.RepeatedScalarFieldContainer[str]
    deployed_at: str
    deployed_by: str
    labels: _containers.ScalarMap[str, str]
    removed: bool
    def __init__(self, name: _Optional[str] = ..., image: _Optional[str] = ..., kind: _Optional[str] = ..., replicas: _Optional[int] = ..., running: _Optional[int] = ..., version: _Optional[str] = ..., placed: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ..., events: _Optional[_Iterable[str]] = ..., deployed_at: _Optional[str] = ..., deployed_by: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., removed: _Optional[bool] = ...) -> None: ...

class ListAppsResponse(_message.Message):
    __slots__ = ("apps",)
    APPS_FIELD_NUMBER: _ClassVar[int]
    apps: _containers.RepeatedCompositeFieldContainer[AppStatus]
    def __init__(self, apps: _Optional[_Iterable[_Union[AppStatus, _Mapping]]] = ...) -> None: ...

class AppExplanation(_message.Message):
    __slots__ = ("name", "plan", "events")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    plan: _containers.RepeatedScalarFieldContainer[str]
    events: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., plan: _Optional[_Iterable[str]] = ..., events: _Optional[_Iterable[str]] = ...) -> None: ...
