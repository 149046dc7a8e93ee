"""Read the server name and ALPN offers from a TLS ClientHello (sans-I/O).

Why: a TLS-ALPN-01 validation (RFC 8737 §3) must get the challenge
certificate when it offers ALPN ``acme-tls/1``, but Python's `ssl` chooses
the certificate in its SNI callback, before ALPN is known.  So while a
challenge is pending, the transport reads the ClientHello first and picks
the context from what it offers (Go's GetCertificate sees both).

Only the first record is read (RFC 8446 §5.1 lets a ClientHello span
records; none that a CA sends does).  Anything malformed is "nothing
offered": the normal context then handles, and refuses, the handshake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

#: TLS record header: type (1), legacy version (2), length (2) (RFC 8446 §5.1).
RECORD_HEADER = 5
#: A record's payload is at most 2^14 bytes (RFC 8446 §5.1).
MAX_RECORD = 16384
_HANDSHAKE, _CLIENT_HELLO = 0x16, 0x01
_EXT_SERVER_NAME, _EXT_ALPN = 0, 16


@dataclass(frozen=True, slots=True)
class HelloOffer:
    """What a ClientHello asked for."""

    server_name: str
    alpn: tuple[str, ...]


def record_complete(data: bytes) -> bool:
    """Whether `data` holds the whole first record (or more than any record may hold)."""
    if len(data) < RECORD_HEADER:
        return False
    return len(data) >= RECORD_HEADER + int.from_bytes(data[3:5], "big") or \
        len(data) >= RECORD_HEADER + MAX_RECORD


def parse_client_hello(data: bytes) -> HelloOffer:
    """The SNI host name and ALPN list of the ClientHello starting `data` (empty if none)."""
    try:
        return _parse(data)
    except (IndexError, ValueError, UnicodeDecodeError):
        return HelloOffer("", ())


def _parse(data: bytes) -> HelloOffer:
    if data[0] != _HANDSHAKE or data[RECORD_HEADER] != _CLIENT_HELLO:
        return HelloOffer("", ())
    end = min(len(data), RECORD_HEADER + int.from_bytes(data[3:5], "big"))
    # handshake header (4), legacy_version (2), random (32) (RFC 8446 §4.1.2)
    pos = RECORD_HEADER + 4 + 2 + 32
    pos += 1 + data[pos]  # legacy_session_id
    pos += 2 + int.from_bytes(data[pos:pos + 2], "big")  # cipher_suites
    pos += 1 + data[pos]  # legacy_compression_methods
    ext_end = min(end, pos + 2 + int.from_bytes(data[pos:pos + 2], "big"))
    pos += 2
    name, alpn = "", cast(tuple[str, ...], ())
    while pos + 4 <= ext_end:
        kind = int.from_bytes(data[pos:pos + 2], "big")
        size = int.from_bytes(data[pos + 2:pos + 4], "big")
        body = data[pos + 4:pos + 4 + size]
        pos += 4 + size
        if kind == _EXT_SERVER_NAME:
            name = _server_name(body)
        elif kind == _EXT_ALPN:
            alpn = _alpn(body)
    return HelloOffer(name, alpn)


def _server_name(body: bytes) -> str:
    # ServerNameList (RFC 6066 §3): list length (2), then type (1) length (2) name.
    pos, end = 2, min(len(body), 2 + int.from_bytes(body[0:2], "big"))
    while pos + 3 <= end:
        kind, size = body[pos], int.from_bytes(body[pos + 1:pos + 3], "big")
        if kind == 0:
            return body[pos + 3:pos + 3 + size].decode("ascii").lower()
        pos += 3 + size
    return ""


def _alpn(body: bytes) -> tuple[str, ...]:
    # ProtocolNameList (RFC 7301 §3.1): list length (2), then length (1) name.
    names = []
    pos, end = 2, min(len(body), 2 + int.from_bytes(body[0:2], "big"))
    while pos < end:
        size = body[pos]
        names.append(body[pos + 1:pos + 1 + size].decode("ascii"))
        pos += 1 + size
    return tuple(names)
