"""Which protocol a connection speaks, from its first bytes (SPEC M12).

One port serves the native protocol, TLS, HTTP/1.1 (and WebSocket, upgraded
from it) and HTTP/2 with prior knowledge.  Their first bytes never overlap:

* native: ``0x89`` (PROTOCOL.md §1: a byte with the high bit set starts no
  text protocol);
* TLS: a handshake record, content type ``0x16`` then major version ``0x03``
  (RFC 8446 §5.1; ``0x0301`` is also what TLS 1.3 sends in the record layer);
* HTTP/2 prior knowledge: the 24-byte connection preface ``PRI * HTTP/2.0``...
  (RFC 9113 §3.4; ``PRI`` was reserved so no HTTP/1 method collides);
* HTTP/1.x: a method token (RFC 9110 §9.1, ``tchar``s) followed by a space.

`detect` is a pure function of the bytes received so far; the transport calls
it until it answers, once, and never switches afterwards.
"""

from __future__ import annotations

from enum import Enum

from appliance.protocol.wire.constants import MAGIC

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NATIVE_FIRST_BYTE = MAGIC[0]
TLS_HANDSHAKE, TLS_MAJOR = 0x16, 0x03
#: The longest method we wait for before calling the bytes garbage.
MAX_METHOD = 24

# RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
# "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                   b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class Detected(Enum):
    """What `detect` recognised."""

    NATIVE = "native"
    TLS = "tls"
    HTTP1 = "http/1.1"
    HTTP2 = "h2c"  # HTTP/2 over cleartext with prior knowledge
    UNKNOWN = "unknown"


def detect(prefix: bytes | bytearray) -> Detected | None:
    """The protocol `prefix` starts, or None while more bytes are needed.

    Every answer other than None is final: more bytes never change it.
    """
    if not prefix:
        return None
    first = prefix[0]
    if first == NATIVE_FIRST_BYTE:
        return Detected.NATIVE  # the native codec checks the rest of its preface
    if first == TLS_HANDSHAKE:
        if len(prefix) < 2:
            return None
        return Detected.TLS if prefix[1] == TLS_MAJOR else Detected.UNKNOWN
    head = bytes(prefix[:len(H2_PREFACE)])
    if H2_PREFACE.startswith(head):
        return Detected.HTTP2 if len(head) == len(H2_PREFACE) else None
    if head.startswith(b"PRI "):
        return Detected.UNKNOWN  # a broken HTTP/2 preface, not an HTTP/1 request
    for i, byte in enumerate(prefix[:MAX_METHOD + 1]):
        if byte == 0x20:
            return Detected.HTTP1 if i else Detected.UNKNOWN
        if byte not in _TCHAR:
            return Detected.UNKNOWN
    return None if len(prefix) <= MAX_METHOD else Detected.UNKNOWN
