"""Which addresses and names the preview fetcher may reach (the SSRF rule).

A link preview makes the server open a connection a user chose; without this
rule a user could read the cloud metadata service, the admin port on
loopback or a printer on the LAN.  Every address a name resolves to is
checked here before any connection (`appliance.media.previews.fetch`
connects only to checked addresses), and so is every literal address in a
URL, every redirect's, every image's.

The default refuses everything not globally reachable: the IANA special
registries (RFC 6890, its IPv4 and IPv6 tables) plus the cloud metadata
addresses.  IPv6 forms that carry an IPv4 address (mapped, compatible,
NAT64, 6to4, SIIT) are judged by the IPv4 address they reach.  Operators
lift the rule for their internal hosts with ``media.previews.allow`` (CIDRs
and host names); tests use the same to declare a loopback server public.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from appliance.errors import ConfigError, PreviewRefusedError

IPAddress = IPv4Address | IPv6Address

#: Cloud instance metadata services (AWS, GCP, Azure, OpenStack; AWS over IPv6;
#: Alibaba).  Named first so the refusal says what was aimed at.
METADATA = frozenset(ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200"))

# (network, what it is): the first match names the refusal.  Sources: the IANA
# IPv4/IPv6 Special-Purpose Address Registries (RFC 6890 and updates).
_V4: tuple[tuple[IPv4Network, str], ...] = tuple((IPv4Network(n), what) for n, what in (
    ("0.0.0.0/32", "the unspecified address"),
    ("0.0.0.0/8", "'this network' (RFC 791)"),
    ("10.0.0.0/8", "a private address (RFC 1918)"),
    ("100.64.0.0/10", "a carrier-grade NAT address (RFC 6598)"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", "a private address (RFC 1918)"),
    ("192.0.0.0/24", "an IETF protocol assignment (RFC 6890)"),
    ("192.0.2.0/24", "a documentation address (RFC 5737)"),
    ("192.31.196.0/24", "an AS112 address (RFC 7535)"),
    ("192.52.193.0/24", "an AMT address (RFC 7450)"),
    ("192.88.99.0/24", "a 6to4 relay anycast address (RFC 7526)"),
    ("192.168.0.0/16", "a private address (RFC 1918)"),
    ("192.175.48.0/24", "an AS112 address (RFC 7534)"),
    ("198.18.0.0/15", "a benchmarking address (RFC 2544)"),
    ("198.51.100.0/24", "a documentation address (RFC 5737)"),
    ("203.0.113.0/24", "a documentation address (RFC 5737)"),
    ("224.0.0.0/4", "a multicast address"),
    ("255.255.255.255/32", "the broadcast address"),
    ("240.0.0.0/4", "a reserved address (RFC 1112)"),
))

# IPv6 prefixes that carry an IPv4 address: (network, what, where the IPv4 is).
_MAPPED, _LOW32, _6TO4 = "mapped", "low32", "6to4"
_V6_EMBEDDING: tuple[tuple[IPv6Network, str, str], ...] = tuple(
    (IPv6Network(n), what, where) for n, what, where in (
        ("::ffff:0:0/96", "an IPv4-mapped address", _MAPPED),
        ("::ffff:0:0:0/96", "an IPv4-translated address (RFC 6145)", _LOW32),
        ("64:ff9b::/96", "a NAT64 address (RFC 6052)", _LOW32),
        ("2002::/16", "a 6to4 address (RFC 3056)", _6TO4),
    ))
_V6: tuple[tuple[IPv6Network, str], ...] = tuple((IPv6Network(n), what) for n, what in (
    ("::/128", "the unspecified address"),
    ("::1/128", "a loopback address"),
    ("::/96", "an IPv4-compatible address (deprecated, RFC 4291)"),
    ("64:ff9b:1::/48", "a local-use NAT64 address (RFC 8215)"),
    ("100::/64", "a discard-only address (RFC 6666)"),
    ("2001::/32", "a Teredo address (RFC 4380)"),
    ("2001:db8::/32", "a documentation address (RFC 3849)"),
    ("2001::/23", "an IETF protocol assignment (RFC 2928)"),
    ("3fff::/20", "a documentation address (RFC 9637)"),
    ("5f00::/16", "an SRv6 SID (RFC 9602)"),
    ("fc00::/7", "a unique local address (RFC 4193)"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address (deprecated, RFC 3879)"),
    ("ff00::/8", "a multicast address"),
))
_BROADCAST = IPv4Address("255.255.255.255")
#: Global unicast (RFC 4291 §2.4): nothing outside it is a web server today.
_V6_GLOBAL = IPv6Network("2000::/3")

#: Names that never leave the machine or the site, refused before any lookup:
#: RFC 6761 §6.3 (localhost), RFC 6762 (.local), RFC 8375 (home.arpa), ICANN's
#: .internal, and the suffixes ICANN will not delegate for collisions (.corp, .home,
#: .lan... are what internal networks use).
_LOCAL_NAMES = ("localhost", "localdomain", "local", "internal", "home.arpa", "home", "lan",
                "intranet", "corp", "private")

_NAME_RE = re.compile(r"^(\*\.)?[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
                      r"(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")


def _embedded_v4(ip: IPv6Address, where: str) -> IPv4Address:
    value = int(ip)
    if where == _6TO4:
        return IPv4Address((value >> 80) & 0xFFFFFFFF)
    return IPv4Address(value & 0xFFFFFFFF)


def _label(ip: IPAddress) -> str | None:
    """What `ip` is when it is not globally reachable; None when it is."""
    if ip in METADATA:
        return "a cloud metadata address"
    if isinstance(ip, IPv4Address):
        for net4, what in _V4:
            if ip in net4:
                return what
        return None if ip.is_global else "not a globally reachable address"
    for net6, what in _V6:
        if ip in net6:
            return what
    if ip not in _V6_GLOBAL:
        return "outside IPv6 global unicast (2000::/3)"
    return None if ip.is_global else "not a globally reachable address"


class AddressPolicy:
    """The SSRF rule: `check` refuses what the fetcher must not reach.

    ``allow`` holds CIDRs and host names (``wiki.corp.example``, or
    ``*.corp.example`` for its subdomains) reached even though private.  An
    allowed name lifts the rule for the addresses it resolves to, except the
    unspecified, multicast, broadcast and metadata addresses, which only a CIDR
    naming them can allow.
    """

    __slots__ = ("_names", "_networks", "_suffixes")

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self._networks: list[IPv4Network | IPv6Network] = []
        self._names: set[str] = set()
        self._suffixes: list[str] = []
        for index, entry in enumerate(allow):
            text = entry.strip().lower().rstrip(".")
            try:
                self._networks.append(ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            if not _NAME_RE.match(text) or len(text) > 253:
                raise ConfigError(f"{entry[:80]!r} is neither a CIDR nor a host name",
                                  key_path=f"media.previews.allow[{index}]")
            if text.startswith("*."):
                self._suffixes.append(text[1:])
            else:
                self._names.add(text)

    def allows_name(self, host: str) -> bool:
        """Whether `host` (canonical: lowercase, ASCII) is allowed by name."""
        return host in self._names or any(host.endswith(s) for s in self._suffixes)

    def check_name(self, host: str) -> None:
        """Refuse names that are local by definition, before any lookup.

        A single-label name would be completed by the resolver's search domains
        (resolv.conf), that is turned into an internal name.

        Raises:
            PreviewRefusedError: naming the host and why.
        """
        if self.allows_name(host):
            return
        for suffix in _LOCAL_NAMES:
            if host == suffix or host.endswith("." + suffix):
                raise PreviewRefusedError(f"{host!r} is a local name (.{suffix})")
        if "." not in host:
            raise PreviewRefusedError(f"{host!r} is a single-label name (a local host)")

    def check(self, ip: IPAddress) -> None:
        """Refuse `ip` unless it is globally reachable or allowed.

        Raises:
            PreviewRefusedError: naming the address and what it is.
        """
        if self._allowed(ip):
            return
        if isinstance(ip, IPv6Address):
            for net, what, where in _V6_EMBEDDING:
                if ip in net:
                    inner = _embedded_v4(ip, where)
                    if self._allowed(inner):
                        return
                    label = _label(inner)
                    if label is not None:
                        raise PreviewRefusedError(f"{ip} is {what} reaching {inner}, {label}")
                    return
        label = _label(ip)
        if label is not None:
            raise PreviewRefusedError(f"{ip} is {label}")

    def check_resolved(self, host: str, addresses: Iterable[IPAddress]) -> None:
        """Check every address `host` resolved to: one refused refuses the name.

        Raises:
            PreviewRefusedError: naming the host, the address and what it is.
        """
        allowed_name = self.allows_name(host)
        for ip in addresses:
            if allowed_name:
                never = ip in METADATA or ip.is_unspecified or ip.is_multicast \
                    or ip == _BROADCAST
                if never and not self._allowed(ip):
                    raise PreviewRefusedError(f"{host} resolves to {ip}, {_label(ip)}")
                continue
            try:
                self.check(ip)
            except PreviewRefusedError as exc:
                raise PreviewRefusedError(f"{host} resolves to {exc.reason}") from None

    def _allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self._networks)
