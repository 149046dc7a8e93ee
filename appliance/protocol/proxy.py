"""The PROXY protocol, versions 1 and 2 (HAProxy's proxy-protocol.txt, 2.9).

A load balancer in front of the server opens the TCP connection itself, so the
socket's peer is the balancer; it then sends one header with the real client's
address before any byte of the client's.  Only headers from configured
trusted proxies are believed (anyone else could claim any address), and from
those a header is required (spec §2: "the receiver MUST be configured to only
receive the protocol described in this specification").

`parse` is a pure function of the bytes received so far: None while more are
needed, the header and its length once complete, `ProxyHeaderError` as soon
as the bytes cannot start a valid header.  Bounded: a v1 header is at most
107 bytes (§2.1); a v2 header at most `MAX_V2_BYTES` (addresses plus TLVs,
which are skipped).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from appliance.errors import RemoteProtocolError
from appliance.protocol.wire import CloseCode

V1_PREFIX = b"PROXY "
#: §2.1: "the maximum line length is 107 bytes including the CRLF".
V1_MAX_BYTES = 107
#: §2.2: the 12-byte signature that starts a v2 header.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_BYTES = 16
#: Addresses (at most 216 bytes, AF_UNIX) plus TLVs we accept before refusing.
MAX_V2_BYTES = 4096
_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_AF_INET, _AF_INET6, _AF_UNIX = 0x1, 0x2, 0x3
_ADDRESS_BYTES = {_AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}


class ProxyHeaderError(RemoteProtocolError):
    """A PROXY header is malformed, too long, or not expected from this peer."""

    def __init__(self, message: str) -> None:
        super().__init__(message, close_code=CloseCode.PROTOCOL_ERROR)


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What the header said; `source` is None when the proxy vouches for no client
    (v1 ``UNKNOWN``, v2 ``LOCAL`` or a non-IP family): use the socket's peer then."""

    version: int
    source: str | None = None
    source_port: int = 0


def starts_like_a_header(prefix: bytes) -> bool:
    """True if `prefix` is, or begins, a v1 or v2 header (for refusing untrusted ones)."""
    size = min(len(prefix), len(V1_PREFIX))
    if size and prefix[:size] == V1_PREFIX[:size]:
        return True
    size = min(len(prefix), len(V2_SIGNATURE))
    return bool(size) and prefix[:size] == V2_SIGNATURE[:size]


def parse(data: bytes) -> tuple[ProxyHeader, int] | None:
    """The header at the start of `data` and its length, or None if incomplete.

    Raises:
        ProxyHeaderError: `data` does not start a valid v1 or v2 header.
    """
    if not data:
        return None
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    if data[0] == V1_PREFIX[0]:
        return _parse_v1(data)
    raise ProxyHeaderError("a PROXY protocol header is required from this proxy")


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    size = min(len(data), len(V1_PREFIX))
    if data[:size] != V1_PREFIX[:size]:
        raise ProxyHeaderError("not a PROXY protocol v1 header")
    end = data.find(b"\r\n", 0, V1_MAX_BYTES)
    if end < 0:
        if len(data) >= V1_MAX_BYTES:
            raise ProxyHeaderError(f"PROXY v1 header longer than {V1_MAX_BYTES} bytes")
        if b"\n" in data:
            raise ProxyHeaderError("PROXY v1 header not ended by CRLF")
        return None
    line = data[len(V1_PREFIX):end]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 header is not ASCII") from None
    fields = text.split(" ")
    if fields[0] == "UNKNOWN":  # §2.1: the rest of the line is ignored
        return ProxyHeader(1), end + 2
    if len(fields) != 5 or fields[0] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("PROXY v1 header must be TCP4|TCP6 src dst sport dport")
    version = 4 if fields[0] == "TCP4" else 6
    source = _v1_address(fields[1], version)
    _v1_address(fields[2], version)
    source_port = _v1_port(fields[3])
    _v1_port(fields[4])
    return ProxyHeader(1, source, source_port), end + 2


def _v1_address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1: not an IP address: {text[:46]!r}") from None
    if address.version != version:
        raise ProxyHeaderError(f"PROXY v1: {text!r} is not IPv{version}")
    return str(address)


def _v1_port(text: str) -> int:
    # §2.1: ports are decimal, 0..65535, without leading zeroes.
    if not text.isdigit() or not text.isascii() or len(text) > 5 or (
            len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyHeaderError(f"PROXY v1: not a port: {text[:8]!r}")
    return int(text)


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int] | None:
    size = min(len(data), len(V2_SIGNATURE))
    if data[:size] != V2_SIGNATURE[:size]:
        raise ProxyHeaderError("not a PROXY protocol v2 header")
    if len(data) < V2_FIXED_BYTES:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"PROXY v2: unknown version {version}")
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError(f"PROXY v2: unknown command {command}")
    family, transport = data[13] >> 4, data[13] & 0x0F
    length = int.from_bytes(data[14:16], "big")
    total = V2_FIXED_BYTES + length
    if total > MAX_V2_BYTES:
        raise ProxyHeaderError(f"PROXY v2 header of {total} bytes, more than {MAX_V2_BYTES}")
    if family > _AF_UNIX or transport > 2:
        raise ProxyHeaderError("PROXY v2: unknown address family or transport")
    if length < _ADDRESS_BYTES.get(family, 0):
        raise ProxyHeaderError("PROXY v2: address block shorter than its family needs")
    if len(data) < total:
        return None
    # §2.2: LOCAL (a health check from the proxy itself) carries no client, and the
    # receiver "must ignore" the address of an unspecified or unknown family.
    if command == _V2_LOCAL or family not in (_AF_INET, _AF_INET6):
        return ProxyHeader(2), total
    body = data[V2_FIXED_BYTES:total]
    if family == _AF_INET:
        source: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(body[0:4])
        port = int.from_bytes(body[8:10], "big")
    else:
        source = ipaddress.IPv6Address(body[0:16])
        port = int.from_bytes(body[32:34], "big")
    return ProxyHeader(2, str(source), port), total


def encode_v1(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    """A v1 header (tests and tools; the server only reads headers)."""
    proto = "TCP6" if ":" in source else "TCP4"
    return f"PROXY {proto} {source} {destination} {source_port} {destination_port}\r\n".encode()


def encode_v2(source: str | None, destination: str = "", source_port: int = 0,
              destination_port: int = 0, tlvs: bytes = b"") -> bytes:
    """A v2 PROXY (or, with `source` None, LOCAL) header over TCP."""
    if source is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + len(tlvs).to_bytes(2, "big") + tlvs
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    family = _AF_INET if src.version == 4 else _AF_INET6
    body = (src.packed + dst.packed + source_port.to_bytes(2, "big")
            + destination_port.to_bytes(2, "big") + tlvs)
    return (V2_SIGNATURE + bytes([0x21, (family << 4) | 0x1]) + len(body).to_bytes(2, "big")
            + body)
