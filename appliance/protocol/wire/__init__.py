"""The native Tidings wire protocol (PROTOCOL.md): a sans-I/O codec."""

from __future__ import annotations

from appliance.protocol.wire.connection import Role, State, WireConnection
from appliance.protocol.wire.constants import (
    DEFAULT_EXPIRY_S,
    MAX_ADDRESS_BYTES,
    MAX_IDS_PER_FRAME,
    U32_MAX,
    U64_MAX,
    Feature,
    HelloFlag,
    WelcomeField,
)
from appliance.protocol.wire.errors import LocalWireError, RemoteWireError
from appliance.protocol.wire.frames import (
    PREFACE,
    PRIORITY_MAX,
    PROTOCOL_VERSION,
    STORED_U64_MAX,
    TYPE_MAX,
    Ack,
    Close,
    CloseCode,
    Event,
    Flag,
    FrameType,
    Hello,
    Message,
    Ping,
    Pong,
    ReadReport,
    ReportAck,
    Status,
    StatusReport,
    Welcome,
    decode_status,
    encode,
    encode_message,
    encode_status,
)

__all__ = [
    "DEFAULT_EXPIRY_S", "MAX_ADDRESS_BYTES", "MAX_IDS_PER_FRAME", "U32_MAX", "U64_MAX",
    "PREFACE", "PRIORITY_MAX", "PROTOCOL_VERSION", "STORED_U64_MAX", "TYPE_MAX", "Ack", "Close",
    "CloseCode", "Event", "Feature", "Flag", "FrameType", "HelloFlag", "WelcomeField",
    "Hello", "LocalWireError", "Message", "Ping", "Pong", "ReadReport", "RemoteWireError",
    "ReportAck", "Role", "State", "Status", "StatusReport", "Welcome", "WireConnection",
    "decode_status", "encode", "encode_message", "encode_status",
]
