"""The native protocol's codes and bounds (PROTOCOL.md beside this file), defined once.

Frame types, status and close codes, flags, and the value ranges every layer
checks against; `frames` encodes and decodes with them.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag
from typing import Final

#: Bytes a client sends before its first frame.  0x89 can start neither a TLS
#: record (0x16), an HTTP method (ASCII letters) nor the HTTP/2 preface ("P"),
#: so one port can tell the protocols apart from the first byte (SPEC M12).
MAGIC: Final = b"\x89TDNG\r\n"
PROTOCOL_VERSION: Final = 1
PREFACE: Final = MAGIC + bytes([PROTOCOL_VERSION])

HEADER: Final = struct.Struct(">IB")
HEADER_SIZE: Final = HEADER.size


class FrameType(IntEnum):
    """The frame type byte (PROTOCOL.md §3)."""

    HELLO = 0x01
    WELCOME = 0x02
    MESSAGE = 0x10
    ACK = 0x11
    STATUS = 0x12
    READ = 0x13
    REPORT_ACK = 0x14
    PING = 0x20
    PONG = 0x21
    CLOSE = 0x30
    # Extensions (PROTOCOL.md §8): only to clients that set HelloFlag.EXTENSIONS.
    PRESENCE_SET = 0x40
    PRESENCE_SUBSCRIBE = 0x41
    PRESENCE = 0x42
    GROUP_MANAGE = 0x50
    GROUP_RESULT = 0x51


class HelloFlag(IntFlag):
    """HELLO `client_flags` (PROTOCOL.md §3.1); undefined bits are ignored."""

    #: The client understands the extension frames and WELCOME fields (§8).
    EXTENSIONS = 1


class WelcomeField(IntEnum):
    """Tags of the extension fields in WELCOME (PROTOCOL.md §3.2), each a u32 value."""

    MAX_PAYLOAD_BYTES = 1
    MAX_EXPIRY_S = 2
    WINDOW = 3
    MAX_DEVICES = 4
    #: `Feature` bits: the extension frames this server has.
    FEATURES = 5
    MAX_PRESENCE_SUBSCRIPTIONS = 6
    TYPING_TIMEOUT_S = 7


class Feature(IntFlag):
    """What a server supports beyond the base protocol (WELCOME field FEATURES)."""

    PRESENCE = 1
    GROUP_MANAGE = 2
    BLOCKING = 4
    GROUP_RECEIPTS = 8


class Status(IntEnum):
    """Message statuses (SPEC M3).  Values below 0x80 only move forward."""

    OUTBOX = 0
    SENT = 1
    DELIVERED = 2
    READ = 3
    #: Aggregate group reports (PROTOCOL.md §8.4), only to EXTENSIONS clients:
    #: every member that was a recipient when the message was accepted has a
    #: device that acknowledged it (DELIVERED_ALL) or reported it read (READ_ALL).
    DELIVERED_ALL = 4
    READ_ALL = 5
    FAILED = 0x80
    USER_OFFLINE = 0x81
    INVALID_DEST = 0x82
    EXPIRED = 0x83
    BLOCKED = 0x84
    NOT_MEMBER = 0x85
    TOO_LARGE = 0x86
    RATE_LIMITED = 0x87
    INBOX_FULL = 0x88
    INVALID_FILE = 0x89


class CloseCode(IntEnum):
    """Why a connection is closed (PROTOCOL.md §5)."""

    NORMAL = 0
    GOING_AWAY = 1
    PROTOCOL_ERROR = 2
    FRAME_TOO_LARGE = 3
    HELLO_REQUIRED = 4
    UNSUPPORTED_VERSION = 5
    AUTH_FAILED = 6
    TOKEN_EXPIRED = 7
    TOO_MANY_DEVICES = 8
    REPLACED = 9
    IDLE_TIMEOUT = 10
    INTERNAL_ERROR = 11
    SLOW_CONSUMER = 12
    ADDRESS_CHANGED = 13


class Flag:
    """Message flag bits (SPEC M2).  Bits 0-15 belong to the app, 16-31 to the server."""

    DELIVERY_RECEIPT: Final = 1 << 0
    READ_RECEIPT: Final = 1 << 1
    TRANSIENT: Final = 1 << 2
    ENCRYPTED: Final = 1 << 3
    FORWARDED: Final = 1 << 4
    MODIFY: Final = 1 << 5
    #: The payload names files it shares (attachments.py, PROTOCOL.md §3.3.1).
    FILE: Final = 1 << 6
    DEFAULT: Final = DELIVERY_RECEIPT | READ_RECEIPT
    #: Set by the server on the copy of a message that another device of the
    #: same user sent; `peer` is then the destination, not the sender (M5).
    OUTGOING_COPY: Final = 1 << 31
    #: Set by the server on what the server itself says: a group's membership
    #: announcements, sent by the app's reserved user ``@app`` (PROTOCOL.md §8.3).
    SYSTEM: Final = 1 << 30
    CLIENT_MASK: Final = 0xFFFF


MAX_ADDRESS_BYTES: Final = 64
#: Ids of one READ, and seqs of one ACK not sent on that connection, that the
#: server takes (PROTOCOL.md §3.4, §3.6): each costs a lookup in the store, so
#: a frame's work is bounded.  Clients send more in several frames.
MAX_IDS_PER_FRAME: Final = 1000
U64_MAX: Final = (1 << 64) - 1
#: `expiry_s` (and the other u32 fields) at most.
U32_MAX: Final = (1 << 32) - 1
#: A message's lifetime when the sender names none (SPEC M2: 7 days), and the
#: longest the server keeps one (`limits.max_expiry_s`).
DEFAULT_EXPIRY_S: Final = 7 * 86400

# --- value ranges (PROTOCOL.md §3) ----------------------------------------
# A field's wire width is not always its range.  Values the server keeps in
# an integer column must fit what every store holds: SQLite INTEGER and
# MariaDB BIGINT are signed 64-bit, MariaDB INT signed 32-bit (issue 12: a
# group id of 2**63 raised OverflowError in the writer and stalled every
# app's commits).  Message ids and refids are full u64: the store maps them
# to signed (protocol.wire.ids).  The decoder refuses a value out
# of range with PROTOCOL_ERROR naming the field; the encoder refuses to send
# one (LocalWireError).  Each bound is defined here once.

#: Server-assigned handles and ids that are stored as they are (ACK and
#: MESSAGE `seq`, REPORT_ACK `report_seq`, `group_id` everywhere).
STORED_U64_MAX: Final = (1 << 63) - 1
#: `priority`: 0 (highest) to 15 (lowest) (SPEC M2).
PRIORITY_MAX: Final = 15
#: `type`: application-defined, stored in a signed 32-bit column.
TYPE_MAX: Final = (1 << 31) - 1
#: The largest frame body a server takes before the connection is OPEN: a HELLO
#: (9 bytes + a token + a device id of at most 64) or a CLOSE.  Nothing is
#: buffered for an unauthenticated peer beyond this (issue 12).
MAX_PRE_OPEN_FRAME_BYTES: Final = 1024
