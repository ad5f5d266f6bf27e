"""lisp: the LISP protocol (RFC 9300, 9301, 8060, 8061) as pure data and pure functions.

Sans-IO: bytes in, bytes and values out. No sockets, no clocks, no asyncio. Every decoder raises
only `DecodeError`; every encoder is strict and raises `EncodeError` for values that do not fit.
"""

from lisp.address import Address, DistinguishedName, MacAddress, NoAddress
from lisp.data_header import DataHeader
from lisp.ecm import EncapsulatedControl
from lisp.errors import DecodeError, EncodeError
from lisp.info import InfoMessage
from lisp.lcaf import (
    AfiList,
    AsNumber,
    ElpHop,
    ExplicitLocatorPath,
    GeoCoordinates,
    InstanceId,
    JsonLcaf,
    KeyValue,
    NatTraversal,
    SecurityKey,
    SourceDestKey,
    UnknownLcaf,
)
from lisp.map_register import MapNotify, MapNotifyAck, MapRegister
from lisp.map_reply import MapReply
from lisp.map_request import MapRequest, RequestRecord
from lisp.messages import ControlMessage, decode_control
from lisp.records import Action, EidRecord, RlocRecord

__all__ = [
    "Action",
    "Address",
    "AfiList",
    "AsNumber",
    "ControlMessage",
    "DataHeader",
    "DecodeError",
    "DistinguishedName",
    "EidRecord",
    "ElpHop",
    "EncapsulatedControl",
    "EncodeError",
    "ExplicitLocatorPath",
    "GeoCoordinates",
    "InfoMessage",
    "InstanceId",
    "JsonLcaf",
    "KeyValue",
    "MacAddress",
    "MapNotify",
    "MapNotifyAck",
    "MapRegister",
    "MapReply",
    "MapRequest",
    "NatTraversal",
    "NoAddress",
    "RequestRecord",
    "RlocRecord",
    "SecurityKey",
    "SourceDestKey",
    "UnknownLcaf",
    "decode_control",
]
