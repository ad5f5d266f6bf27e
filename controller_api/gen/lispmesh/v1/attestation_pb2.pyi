# mypy: ignore-errors
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class AttestationChallengeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AttestationChallenge(_message.Message):
    __slots__ = ("nonce", "pcrs", "interval_seconds")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    PCRS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    pcrs: _containers.RepeatedScalarFieldContainer[int]
    interval_seconds: float
    def __init__(self, nonce: _Optional[bytes] = ..., pcrs: _Optional[_Iterable[int]] = ..., interval_seconds: _Optional[float] = ...) -> None: ...

class TpmQuote(_message.Message):
    __slots__ = ("attest", "signature", "pcrs", "event_log")
    class PcrsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: bytes
        def __init__(self, key: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...
    ATTEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PCRS_FIELD_NUMBER: _ClassVar[int]
    EVENT_LOG_FIELD_NUMBER: _ClassVar[int]
    attest: bytes
    signature: bytes
    pcrs: _containers.ScalarMap[int, bytes]
    event_log: bytes
    def __init__(self, attest: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., pcrs: _Optional[_Mapping[int, bytes]] = ..., event_log: _Optional[bytes] = ...) -> None: ...

class AttestationResult(_message.Message):
    __slots__ = ("ok", "reason", "attested_at")
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTESTED_AT_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    reason: str
    attested_at: str
    def __init__(self, ok: _Optional[bool] = ..., reason: _Optional[str] = ..., attested_at: _Optional[str] = ...) -> None: ...
