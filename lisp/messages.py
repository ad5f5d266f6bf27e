"""Decode any LISP control message (UDP 4342 payload) by its type nibble."""

from __future__ import annotations

from typing import TypeAlias

from lisp.ecm import EncapsulatedControl
from lisp.errors import DecodeError
from lisp.info import InfoMessage
from lisp.map_register import MapNotify, MapNotifyAck, MapRegister
from lisp.map_reply import MapReply
from lisp.map_request import MapRequest

ControlMessage: TypeAlias = (
    MapRequest
    | MapReply
    | MapRegister
    | MapNotify
    | MapNotifyAck
    | InfoMessage
    | EncapsulatedControl
)

TYPE_NAMES = {
    1: "Map-Request",
    2: "Map-Reply",
    3: "Map-Register",
    4: "Map-Notify",
    5: "Map-Notify-Ack",
    6: "Map-Referral",
    7: "Info",
    8: "ECM",
    15: "Shared-Extension",
}

_DECODERS: dict[int, type[ControlMessage]] = {
    1: MapRequest,
    2: MapReply,
    3: MapRegister,
    4: MapNotify,
    5: MapNotifyAck,
    7: InfoMessage,
    8: EncapsulatedControl,
}


def message_type(data: bytes) -> int:
    if not data:
        raise DecodeError("empty control message")
    return data[0] >> 4


def decode_control(data: bytes) -> ControlMessage:
    """Decode one control message; raises only DecodeError, whatever the input."""
    msg_type = message_type(data)
    decoder = _DECODERS.get(msg_type)
    if decoder is None:
        name = TYPE_NAMES.get(msg_type, "unknown")
        raise DecodeError(f"unsupported control message type {msg_type} ({name})")
    try:
        return decoder.decode(data)
    except DecodeError:
        raise
    except (ValueError, OverflowError, IndexError, UnicodeError) as exc:  # defence in depth
        raise DecodeError(f"malformed {TYPE_NAMES[msg_type]}: {exc}") from exc
