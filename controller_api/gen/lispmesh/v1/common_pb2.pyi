# mypy: ignore-errors
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EidPrefix(_message.Message):
    __slots__ = ("instance_id", "prefix")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    instance_id: int
    prefix: str
    def __init__(self, instance_id: _Optional[int] = ..., prefix: _Optional[str] = ...) -> None: ...

class Uplink(_message.Message):
    __slots__ = ("interface", "address", "up")
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    interface: str
    address: str
    up: bool
    def __init__(self, interface: _Optional[str] = ..., address: _Optional[str] = ..., up: _Optional[bool] = ...) -> None: ...
