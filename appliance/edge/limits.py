"""Per-address and global connection limits, and automatic blocking (SPEC M13).

Pure decisions: the acceptor asks `admit` when a connection arrives (before a
byte is read), tells `authenticated` when it proved itself and `closed` when it
went away; the auth paths report `auth_failed`.  Time is passed in (the
clock's monotonic seconds), so tests drive it.

Memory is bounded under an attack from many addresses (an IPv6 attacker has
2**64 of them per /64, so IPv6 is counted per `ipv6_prefix`): at most
`max_tracked_addresses` entries, least recently seen first out, and idle
entries expire.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum

from appliance.edge.config import EdgeConfig
from appliance.edge.ipfilter import Address, CidrSet, IpFilter, parse_cidr
from appliance.ratelimit import TokenBucket

log = logging.getLogger(__name__)

DEFAULT_PER_IP_CONNECTIONS = EdgeConfig().per_ip_connections
#: Fewest connections a derived global cap allows, however low RLIMIT_NOFILE is.
MIN_CONNECTIONS = 16
#: The default cap on handshakes in flight: what an unauthenticated peer may hold
#: (a TLS session's buffers and one HELLO, ~70 KB at most) times this bounds the
#: memory strangers can take (~140 MiB), however many addresses they have; an
#: honest connect storm of 8,000/s keeps ~250 in flight.
DEFAULT_MAX_HANDSHAKES = 2048
#: Entries looked at per `admit` to make room in a full table (bounded work).
_EVICT_TRIES = 32
#: Entries looked at per `expire` call.
_EXPIRE_TRIES = 2048


class Refusal(Enum):
    """Why a connection was refused; the value is the counter's name."""

    FILTER = "refused_filter"
    BLOCKED = "refused_blocked"
    PER_IP = "refused_per_ip"
    PER_IP_HANDSHAKES = "refused_per_ip_handshakes"
    RATE = "refused_rate"
    GLOBAL = "refused_global"
    GLOBAL_HANDSHAKES = "refused_global_handshakes"
    PROXY = "refused_proxy"


def derived_max_connections(config: EdgeConfig, nofile: int) -> int:
    """`max_connections`, or RLIMIT_NOFILE minus the reserve when it is 0."""
    if config.max_connections:
        return config.max_connections
    return max(MIN_CONNECTIONS, nofile - config.reserved_fds)


class Peer:
    """What is remembered about one address (or IPv6 prefix)."""

    __slots__ = ("bucket", "connections", "fail_count", "fail_since", "handshakes", "key",
                 "seen")

    def __init__(self, key: int, bucket: TokenBucket | None, now: float) -> None:
        self.key = key
        self.bucket = bucket
        self.connections = 0
        self.handshakes = 0
        self.fail_count = 0
        self.fail_since = now
        self.seen = now


class Limits:
    """The counters and decisions of one server; replaced fields on reload keep the tables."""

    def __init__(self, config: EdgeConfig, ipfilter: IpFilter, nofile: int) -> None:
        self.connections = 0
        self.handshakes = 0
        self.counters: dict[str, int] = {r.value: 0 for r in Refusal}
        self.counters["auto_blocks"] = 0
        self.counters["accepted"] = 0
        self._peers: OrderedDict[int, Peer] = OrderedDict()
        #: key -> monotonic time the block ends (bounded like the peers).
        self.blocked: dict[int, float] = {}
        self.configure(config, ipfilter, nofile)

    def configure(self, config: EdgeConfig, ipfilter: IpFilter, nofile: int) -> None:
        """Apply new settings (SIGHUP); counters and open connections are kept."""
        self.config = config
        self.filter = ipfilter
        self.exempt = CidrSet(parse_cidr(c) for c in config.exempt)
        self.max_connections = derived_max_connections(config, nofile)
        self.max_handshakes = config.max_handshakes or max(
            MIN_CONNECTIONS // 2, min(DEFAULT_MAX_HANDSHAKES, self.max_connections // 2))
        self._v6_shift = 128 - config.ipv6_prefix

    def key(self, address: Address) -> int:
        """Per-address key; IPv6 by prefix, offset so it never equals an IPv4 key."""
        if address.version == 4:
            return int(address)
        return (1 << 130) | (int(address) >> self._v6_shift)

    # --- a connection's life -------------------------------------------------------------

    def admit(self, address: Address, now: float,
              make_room: Callable[[], bool] | None = None, *,
              allow_list: bool = True) -> Peer | Refusal:
        """A new connection from `address`: its `Peer` (counted) or why it is refused.

        At the global handshake cap, `make_room()` may end another handshake (True if
        it did); it is asked only for a connection every other rule admits.  Without
        `allow_list`, only the block list of the filter applies (ACME's validators on
        the redirect port: `RedirectGate`).
        """
        if not (self.filter.permits(address) if allow_list
                else not self.filter.block.contains(address)):
            return self._refuse(Refusal.FILTER)
        key = self.key(address)
        if self.blocked:
            until = self.blocked.get(key)
            if until is not None:
                if until > now:
                    return self._refuse(Refusal.BLOCKED)
                del self.blocked[key]
        if self.connections >= self.max_connections:
            return self._refuse(Refusal.GLOBAL)
        exempt = self.exempt.contains(address)
        peer = self._peer(key, now, exempt)
        if peer is None:
            return self._refuse(Refusal.GLOBAL)  # the table is full of live entries
        if not exempt:
            if peer.connections >= self.config.per_ip_connections:
                return self._refuse(Refusal.PER_IP)
            if peer.handshakes >= self.config.per_ip_handshakes:
                return self._refuse(Refusal.PER_IP_HANDSHAKES)
        if self.handshakes >= self.max_handshakes and not (make_room and make_room()):
            return self._refuse(Refusal.GLOBAL_HANDSHAKES)
        if not exempt and peer.bucket is not None and not peer.bucket.take(now):
            return self._refuse(Refusal.RATE)
        peer.connections += 1
        peer.handshakes += 1
        self.connections += 1
        self.handshakes += 1
        self.counters["accepted"] += 1
        return peer

    def admit_proxy(self, make_room: Callable[[], bool] | None = None) -> bool:
        """A connection from a trusted proxy, before its header: global caps only."""
        if self.connections >= self.max_connections:
            self._refuse(Refusal.GLOBAL)
            return False
        if self.handshakes >= self.max_handshakes and not (make_room and make_room()):
            self._refuse(Refusal.GLOBAL_HANDSHAKES)
            return False
        self.connections += 1
        self.handshakes += 1
        return True

    def release_proxy(self) -> None:
        """Undo `admit_proxy` (the header came and `admit` counts it now, or it closed)."""
        self.connections -= 1
        self.handshakes -= 1

    def authenticated(self, peer: Peer) -> None:
        """`peer`'s connection proved itself: it no longer counts as a handshake."""
        peer.handshakes -= 1
        self.handshakes -= 1

    def closed(self, peer: Peer, handshaking: bool) -> None:
        peer.connections -= 1
        self.connections -= 1
        if handshaking:
            peer.handshakes -= 1
            self.handshakes -= 1

    def refused(self, reason: Refusal) -> None:
        """Count a refusal decided elsewhere (a bad PROXY header)."""
        self._refuse(reason)

    def auth_failed(self, address: Address, now: float) -> bool:
        """An authentication failure from `address`; True if it is now blocked."""
        config = self.config
        if not config.auth_fail_count or self.exempt.contains(address):
            return False  # blocking a local reverse proxy would block everyone behind it
        key = self.key(address)
        peer = self._peer(key, now, exempt=False)
        if peer is None:
            return False
        if now - peer.fail_since > config.auth_fail_window_s:
            peer.fail_since, peer.fail_count = now, 0
        peer.fail_count += 1
        if peer.fail_count < config.auth_fail_count:
            return False
        peer.fail_count = 0
        if len(self.blocked) >= config.max_tracked_addresses:
            self._drop_expired_blocks(now)
            if len(self.blocked) >= config.max_tracked_addresses:
                del self.blocked[min(self.blocked, key=self.blocked.__getitem__)]
        self.blocked[key] = now + config.auth_block_s
        self.counters["auto_blocks"] += 1
        # An event operators look for (fail2ban-style): the address, not the credentials.
        log.warning("edge: blocked %s for %.0f s after %d authentication failures within"
                    " %.0f s", address, config.auth_block_s, config.auth_fail_count,
                    config.auth_fail_window_s)
        return True

    def is_blocked(self, address: Address, now: float) -> bool:
        until = self.blocked.get(self.key(address))
        return until is not None and until > now

    # --- memory bounds -------------------------------------------------------------------

    def _peer(self, key: int, now: float, exempt: bool) -> Peer | None:
        peer = self._peers.get(key)
        if peer is not None:
            self._peers.move_to_end(key)
            peer.seen = now
            return peer
        if len(self._peers) >= self.config.max_tracked_addresses and not self._evict():
            return None
        config = self.config
        bucket = None if exempt else TokenBucket(now, config.per_ip_rate_per_s,
                                                 float(config.per_ip_burst))
        peer = self._peers[key] = Peer(key, bucket, now)
        return peer

    def _evict(self) -> bool:
        """Drop the least recently seen entry without open connections; bounded work."""
        peers = self._peers
        for _ in range(min(_EVICT_TRIES, len(peers))):
            key, peer = peers.popitem(last=False)
            if not peer.connections:
                return True
            peers[key] = peer  # still in use: to the back
        return False

    def expire(self, now: float) -> int:
        """Forget idle entries (no connection, bucket refilled, no recent failure)."""
        idle_s = max(self.config.per_ip_burst / self.config.per_ip_rate_per_s,
                     self.config.auth_fail_window_s)
        peers = self._peers
        dropped = 0
        for _ in range(min(_EXPIRE_TRIES, len(peers))):
            key, peer = next(iter(peers.items()))
            if now - peer.seen <= idle_s:
                break  # the rest were seen more recently
            del peers[key]
            if peer.connections:
                peer.seen = now
                peers[key] = peer  # long-lived connections: look again later
            else:
                dropped += 1
        self._drop_expired_blocks(now)
        return dropped

    def _drop_expired_blocks(self, now: float) -> None:
        for key in [k for k, until in self.blocked.items() if until <= now]:
            del self.blocked[key]

    def _refuse(self, reason: Refusal) -> Refusal:
        self.counters[reason.value] += 1
        return reason

    def snapshot(self) -> dict[str, int]:
        """Counters for the operator's statistics."""
        return {**self.counters, "connections": self.connections, "handshakes": self.handshakes,
                "max_connections": self.max_connections, "max_handshakes": self.max_handshakes,
                "tracked_addresses": len(self._peers), "blocked_addresses": len(self.blocked),
                "filter_allow": len(self.filter.allow), "filter_block": len(self.filter.block)}
