"""The public hostname: a DNS name (not an IP, not localhost) that resolves to this machine.

Discourse's rules (packaging.md §2): a bare IP is refused, and the name should
point here.  "Here" is tested the way the kernel knows it: an address this
machine has can be bound, any other address cannot (EADDRNOTAVAIL).  Behind
NAT the name resolves to the router's public address; the operator confirms
that (``--hostname-not-local-ok``).
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
from dataclasses import dataclass
from typing import Final

from appliance.certs.config import is_dns_name
from appliance.errors import AnswerError
from appliance.setup.answers import HOSTNAME

#: How long name resolution may take before the wizard says it does not resolve.
RESOLVE_TIMEOUT_S: Final = 10.0
#: At most this many resolved addresses are looked at (a name with hundreds is hostile).
MAX_ADDRESSES: Final = 32
#: Special-use names no public CA can validate (RFC 6761 §6, RFC 6762 .local,
#: RFC 7686 .onion, RFC 8375 home.arpa; ICANN reserved .internal in 2024).
SPECIAL_USE: Final = ("localhost", "local", "test", "example", "invalid", "internal",
                      "home.arpa", "onion", "lan")


def check_syntax(raw: str) -> str:
    """`raw` as a lower-case DNS name without the trailing dot.

    Raises:
        AnswerError: empty, an IP address, localhost, or not a DNS name.
    """
    name = raw.strip().rstrip(".").lower()
    fix = "give the DNS name clients connect to, e.g. --hostname chat.example.com"
    if not name:
        raise AnswerError("no hostname given", question=HOSTNAME.key, fix=fix)
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        pass
    else:
        raise AnswerError(f"{raw!r} is an IP address, not a hostname", question=HOSTNAME.key,
                          fix=fix + " (an A/AAAA record pointing at the IP)")
    if name == "localhost" or name.endswith(".localhost"):
        raise AnswerError(f"{raw!r} names this machine only to itself (RFC 6761)",
                          question=HOSTNAME.key, fix=fix)
    if not is_dns_name(name):
        raise AnswerError(f"{raw!r} is not a fully qualified DNS name (letters, digits and"
                          " '-' in two or more dot-separated labels)", question=HOSTNAME.key,
                          fix=fix)
    return name


def special_use(name: str) -> bool:
    """Whether `name` is under a special-use domain (no public CA issues for it)."""
    return any(name == s or name.endswith("." + s) for s in SPECIAL_USE)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a hostname resolves to, and which of those addresses are this machine's."""

    addresses: tuple[str, ...]
    #: Addresses of this machine other machines can reach (not loopback).
    local: tuple[str, ...]
    loopback: tuple[str, ...]

    def problem(self, name: str) -> str | None:
        """Why `name` does not point at this machine, or None when it does."""
        if not self.addresses:
            return f"{name} does not resolve (no A/AAAA record yet?)"
        if self.local:
            return None
        if self.loopback and len(self.loopback) == len(self.addresses):
            return (f"{name} resolves only to loopback ({', '.join(self.loopback)}):"
                    " other machines cannot reach it")
        shown = ", ".join(self.addresses[:4])
        return f"{name} resolves to {shown}, not an address of this machine (behind NAT?)"


def resolve(name: str, timeout_s: float = RESOLVE_TIMEOUT_S) -> Resolution:
    """Resolve `name` (bounded in time) and test each address for being this machine's."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        infos = pool.submit(socket.getaddrinfo, name, None, 0, socket.SOCK_STREAM).result(
            timeout_s)
    except (OSError, UnicodeError, concurrent.futures.TimeoutError):
        infos = []
    finally:
        # A resolver stuck past the deadline is left to finish on its own.
        pool.shutdown(wait=False)
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses and len(addresses) < MAX_ADDRESSES:
            addresses.append(address)
    local = tuple(a for a in addresses if is_local(a) and not _loopback(a))
    loopback = tuple(a for a in addresses if _loopback(a))
    return Resolution(tuple(addresses), local, loopback)


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address.split("%")[0]).is_loopback


def is_local(address: str) -> bool:
    """Whether `address` is one of this machine's: only those can be bound."""
    ip = ipaddress.ip_address(address.split("%")[0])
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True
