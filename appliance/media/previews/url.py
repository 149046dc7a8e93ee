"""URLs the preview fetcher accepts, parsed strictly into one canonical form.

The host is read the way a browser reads it (WHATWG URL "host parser"), so
that no form of an address slips past the policy: a host that ends in a
number is an IPv4 address in any of the forms ``inet_aton`` accepts
(``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``) and is rewritten as
the dotted quad it means; international names become A-labels (UTS #46,
which also folds full-width digits and dots); what a browser would decode or
reinterpret (percent-escapes in the host, backslashes in the authority, a
zone id) is refused rather than guessed.  User names and passwords are
refused; the fragment is dropped (it never goes on the wire).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from urllib.parse import quote, urljoin

import idna

from appliance.errors import PreviewRefusedError

#: What a browser address bar or a link keeps in practice; longer is refused.
MAX_URL_CHARS = 2048
#: The canonical form, once percent-encoded (each non-ASCII character grows to 6-12).
MAX_CANONICAL_CHARS = 2 * MAX_URL_CHARS
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_NAME_CHARS = 253  # RFC 1035 §2.3.4

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# C0 controls and DEL anywhere (WHATWG strips tabs and newlines: we refuse).
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# WHATWG "forbidden host code points" (controls are refused above).
_FORBIDDEN_HOST_RE = re.compile(r"[ #%/:<>?@\[\\\]^|]")
_NUMERIC_LABEL_RE = re.compile(r"^(0[xX][0-9A-Fa-f]*|[0-9]+)$")
_LABEL_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_PORT_RE = re.compile(r"^[0-9]{1,5}$")
# Kept as they are in a path and a query (RFC 3986 pchar, plus "/" "?" and "%"
# so that existing escapes stay); everything else is percent-encoded as UTF-8.
_PATH_SAFE = "/%!$&'()*+,;=:@-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


@dataclass(frozen=True, slots=True)
class PreviewUrl:
    """An http(s) URL in canonical form; `str()` gives it back (the cache key)."""

    scheme: str  # "http" | "https"
    host: str  # lowercase A-label name, dotted-quad IPv4, or compressed IPv6 (no brackets)
    port: int
    target: str  # path and query, ASCII, starts with "/"
    ip: IPv4Address | IPv6Address | None  # the host, when it is an address literal

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if isinstance(self.ip, IPv6Address) else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.target}"


def parse_url(text: str) -> PreviewUrl:
    """`text` as a canonical http(s) URL.

    Raises:
        PreviewRefusedError: the reason names what is wrong (scheme, host, userinfo...).
    """
    if len(text) > MAX_URL_CHARS:
        raise PreviewRefusedError(f"URL longer than {MAX_URL_CHARS} characters")
    text = text.strip()
    if _CONTROL_RE.search(text):
        raise PreviewRefusedError("control character in URL")
    match = _SCHEME_RE.match(text)
    if match is None:
        raise PreviewRefusedError("not an absolute URL")
    scheme = match.group(1).lower()
    if scheme not in DEFAULT_PORTS:
        raise PreviewRefusedError(f"scheme {scheme[:20]!r} is not fetched (http and https only)")
    rest = text[match.end():]
    if not rest.startswith("//"):
        raise PreviewRefusedError(f"{scheme} URL without //host")
    rest = rest[2:]
    end = len(rest)
    for stop in "/?#\\":
        at = rest.find(stop)
        if 0 <= at < end:
            end = at
    authority, tail = rest[:end], rest[end:]
    if tail.startswith("\\"):
        # A browser reads it as "/" (so http://a\@b is host b to it): refuse the ambiguity.
        raise PreviewRefusedError("backslash after the host")
    if "@" in authority:
        raise PreviewRefusedError("user name or password in URL (userinfo is refused)")
    host, port, ip = _host_port(authority, scheme)
    url = PreviewUrl(scheme, host, port, _target(tail), ip)
    if len(url.target) > MAX_CANONICAL_CHARS:
        raise PreviewRefusedError(f"URL longer than {MAX_CANONICAL_CHARS} characters"
                                  " once percent-encoded")
    return url


def join_url(base: PreviewUrl, reference: str) -> PreviewUrl:
    """`reference` (a Location, an og:image...) resolved against `base`, then parsed.

    Raises:
        PreviewRefusedError: as `parse_url`.
    """
    reference = reference.strip()
    if len(reference) > MAX_URL_CHARS:
        raise PreviewRefusedError(f"URL longer than {MAX_URL_CHARS} characters")
    return parse_url(urljoin(str(base), reference))


def check_port(url: PreviewUrl, ports: tuple[int, ...]) -> None:
    """Refuse a port other than the scheme's default unless ``media.previews.ports`` lists it.

    Raises:
        PreviewRefusedError: naming the port.
    """
    if url.port != DEFAULT_PORTS[url.scheme] and url.port not in ports:
        raise PreviewRefusedError(
            f"port {url.port} is not fetched (80 for http, 443 for https,"
            " or one in media.previews.ports)")


def _host_port(authority: str, scheme: str) -> tuple[str, int, IPv4Address | IPv6Address | None]:
    port_text = ""
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise PreviewRefusedError("unterminated [IPv6] host")
        inner, after = authority[1:close], authority[close + 1:]
        if after and not after.startswith(":"):
            raise PreviewRefusedError("junk after the [IPv6] host")
        port_text = after[1:]
        if "%" in inner:
            raise PreviewRefusedError("IPv6 zone id in URL")
        try:
            ip6 = IPv6Address(inner)
        except ValueError:
            raise PreviewRefusedError(f"invalid IPv6 address {inner[:60]!r}") from None
        return ip6.compressed, _port(port_text, scheme), ip6
    host = authority
    if ":" in authority:
        host, _, port_text = authority.rpartition(":")
    port = _port(port_text, scheme)
    if not host:
        raise PreviewRefusedError("URL without a host")
    if _FORBIDDEN_HOST_RE.search(host):
        raise PreviewRefusedError(f"forbidden character in host {host[:60]!r}")
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            raise PreviewRefusedError(f"invalid international name {host[:60]!r}") from None
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]  # the absolute form of the same name
    labels = host.split(".")
    if _NUMERIC_LABEL_RE.match(labels[-1]):
        ip4 = _ipv4(host, labels)
        return str(ip4), port, ip4
    if len(host) > MAX_NAME_CHARS or not all(_LABEL_RE.match(label) for label in labels):
        raise PreviewRefusedError(f"invalid host name {host[:60]!r}")
    return host, port, None


def _ipv4(host: str, labels: list[str]) -> IPv4Address:
    """A host ending in a number, read as ``inet_aton`` (and WHATWG) read it."""
    if len(labels) > 4 or not all(_NUMERIC_LABEL_RE.match(label) for label in labels):
        raise PreviewRefusedError(f"host {host[:60]!r} ends in a number but is no IPv4 address")
    try:
        # The characters are checked above: glibc's inet_aton ignores junk after a space.
        packed = socket.inet_aton(host)
    except OSError:
        raise PreviewRefusedError(f"invalid IPv4 address {host[:60]!r}") from None
    return IPv4Address(packed)


def _port(text: str, scheme: str) -> int:
    if not text:
        return DEFAULT_PORTS[scheme]  # "http://host:/" is the default port (WHATWG)
    if not _PORT_RE.match(text) or not 1 <= int(text) <= 65535:
        raise PreviewRefusedError(f"invalid port {text[:10]!r}")
    return int(text)


def _target(tail: str) -> str:
    tail = tail.split("#", 1)[0]  # the fragment is the client's, never sent
    path, sep, query = tail.partition("?")
    path = quote(path.replace("\\", "/") or "/", safe=_PATH_SAFE)
    return path + (sep + quote(query, safe=_QUERY_SAFE) if sep else "")
