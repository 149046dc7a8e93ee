"""What to tell the operator when a CA could not validate a hostname.

The CA's problem type (RFC 8555 §6.7) says what went wrong from where the CA
stands; a look at how this machine resolves the name says whether it points
here at all.  A name that resolves elsewhere may still be right (a NAT or a
load balancer forwards to us), so the hint says what it saw, not a verdict.
"""

from __future__ import annotations

import socket

_PREFIX = "urn:ietf:params:acme:error:"


def hint_for(hostname: str, challenge: str, problem_type: str) -> str:
    """An actionable sentence for a failed `challenge` on `hostname`."""
    code = problem_type.removeprefix(_PREFIX)
    where = ("port 80 (server.redirect_port)" if challenge == "http-01"
             else "port 443 (server.port)")
    resolution = describe_resolution(hostname)
    if code == "dns":
        return (f"The CA could not resolve {hostname}: publish an A/AAAA record pointing at"
                f" this machine. {resolution}")
    if code in ("connection", "tls"):
        return (f"The CA could not reach {hostname} on {where}: check that the name points"
                f" at this machine and that a firewall lets the port through. {resolution}")
    if code in ("unauthorized", "incorrectResponse"):
        return (f"Something else answered for {hostname} on {where}: the name points at"
                f" another machine, or a proxy in front answers the challenge. {resolution}")
    return resolution


def describe_resolution(hostname: str) -> str:
    """How this machine resolves `hostname`, and whether those addresses are its own."""
    try:
        infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return f"Here {hostname} does not resolve at all."
    addresses = sorted({str(info[4][0]) for info in infos})
    own = [a for a in addresses if is_local_address(a)]
    if own:
        return f"Here {hostname} resolves to {', '.join(addresses)} (this machine)."
    return (f"Here {hostname} resolves to {', '.join(addresses)}, not an address of this"
            " machine (fine only if a NAT or load balancer forwards it here).")


def is_local_address(address: str) -> bool:
    """Whether `address` belongs to this machine: binding to it succeeds only then."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
    except OSError:
        return False
    return True
