"""``[edge]``: the IP filter, PROXY protocol and connection limits (SPEC M13).

Every limit has a safe default; 0 where documented means "derived".  The
README lists the keys; `check` validates what the loader cannot (CIDRs).
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.edge.ipfilter import parse_cidr
from appliance.errors import ConfigError, UsageError


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """Values of the ``[edge]`` table."""

    #: CIDRs allowed to connect; empty = everyone not blocked.  The block list wins.
    allow: tuple[str, ...] = ()
    #: CIDRs refused before a byte is read.
    block: tuple[str, ...] = ()
    #: Files of CIDRs, one per line (``#`` comments); "" = ``<data_dir>/ipfilter/allow.txt``
    #: and ``block.txt``.  `tidings ipfilter` and the operator REST routes edit them;
    #: the server reloads them when they change and on SIGHUP.
    allow_file: str = ""
    block_file: str = ""
    #: Load balancers that send a PROXY protocol v1/v2 header (and must).
    trusted_proxies: tuple[str, ...] = ()
    #: A trusted proxy's header must arrive within this many seconds.
    proxy_header_timeout_s: float = 5.0
    #: Addresses the per-IP limits and automatic blocking do not apply to (a local
    #: reverse proxy, the operator's tools).  Global caps and the filter still apply.
    exempt: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    #: Open connections, all addresses; 0 = RLIMIT_NOFILE minus `reserved_fds`.
    max_connections: int = 0
    #: File descriptors kept free for the database, files and listening sockets.
    reserved_fds: int = 64
    #: Connections not yet authenticated, all addresses; 0 = half of max_connections,
    #: at most 2,048 (`limits.DEFAULT_MAX_HANDSHAKES`).
    max_handshakes: int = 0
    #: Open connections per address (per /`ipv6_prefix` for IPv6).
    per_ip_connections: int = 256
    #: Connections per address not yet authenticated (HELLO or an authenticated request).
    per_ip_handshakes: int = 64
    #: New connections per second per address, and the burst it may save up.
    per_ip_rate_per_s: float = 50.0
    per_ip_burst: int = 200
    #: IPv6 addresses are limited per prefix of this length (one host gets a /64).
    ipv6_prefix: int = 64
    #: Authentication failures from one address within `auth_fail_window_s` that
    #: block it for `auth_block_s` (0 = never block).
    auth_fail_count: int = 30
    auth_fail_window_s: float = 60.0
    auth_block_s: float = 300.0
    #: Addresses whose counters are remembered (bounds memory under an attack
    #: from many addresses); idle entries expire first.
    max_tracked_addresses: int = 100_000


#: Minimum value of each numeric key (the loader range-checks against these).
MINIMUMS: dict[str, float] = {
    "proxy_header_timeout_s": 0.1, "max_connections": 0, "reserved_fds": 0,
    "max_handshakes": 0, "per_ip_connections": 1, "per_ip_handshakes": 1,
    "per_ip_rate_per_s": 0.01, "per_ip_burst": 1, "ipv6_prefix": 1, "auth_fail_count": 0,
    "auth_fail_window_s": 0.1, "auth_block_s": 0.1, "max_tracked_addresses": 1000,
}
MAXIMUMS: dict[str, float] = {"ipv6_prefix": 128, "proxy_header_timeout_s": 60.0}


def check(config: EdgeConfig) -> None:
    """Validate what types alone do not: every CIDR and every range.

    Raises:
        ConfigError: naming the key (``edge.block``...).
    """
    for name in ("allow", "block", "trusted_proxies", "exempt"):
        for text in getattr(config, name):
            try:
                parse_cidr(text)
            except UsageError as exc:
                raise ConfigError(str(exc), key_path=f"edge.{name}") from None
    for name, low in MINIMUMS.items():
        value = getattr(config, name)
        if value < low:
            raise ConfigError(f"must be >= {low}, got {value}", key_path=f"edge.{name}")
        if name in MAXIMUMS and value > MAXIMUMS[name]:
            raise ConfigError(f"must be <= {MAXIMUMS[name]}, got {value}",
                              key_path=f"edge.{name}")
