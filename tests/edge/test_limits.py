"""Per-address and global limits, auto-blocking, and the bounds on their memory."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from appliance.edge.config import EdgeConfig
from appliance.edge.ipfilter import IpFilter, parse_address, parse_cidr
from appliance.edge.limits import Limits, Peer, Refusal, derived_max_connections

A = parse_address("192.0.2.1")
B = parse_address("192.0.2.2")


def limits(**changes: object) -> Limits:
    config = dataclasses.replace(EdgeConfig(exempt=()), **changes)  # type: ignore[arg-type]
    return Limits(config, IpFilter.of(), nofile=1024)


def test_per_ip_connections_and_handshakes() -> None:
    lim = limits(per_ip_connections=3, per_ip_handshakes=2)
    p1, p2 = lim.admit(A, 0.0), lim.admit(A, 0.0)
    assert isinstance(p1, Peer)
    assert isinstance(p2, Peer)
    assert lim.admit(A, 0.0) is Refusal.PER_IP_HANDSHAKES
    assert isinstance(lim.admit(B, 0.0), Peer)  # another address is not affected
    lim.authenticated(p1)
    p3 = lim.admit(A, 0.0)
    assert isinstance(p3, Peer)
    assert lim.admit(A, 0.0) is Refusal.PER_IP
    lim.closed(p3, handshaking=True)
    assert isinstance(lim.admit(A, 0.0), Peer)
    assert lim.snapshot()["refused_per_ip"] == 1
    assert lim.snapshot()["refused_per_ip_handshakes"] == 1


def test_new_connections_per_second() -> None:
    lim = limits(per_ip_rate_per_s=10.0, per_ip_burst=5, per_ip_handshakes=1000,
                 per_ip_connections=1000)
    results = [lim.admit(A, 0.0) for _ in range(6)]
    assert results[-1] is Refusal.RATE
    assert all(isinstance(r, Peer) for r in results[:5])
    assert isinstance(lim.admit(A, 0.1), Peer)  # a token back after 1/rate s
    assert lim.counters["refused_rate"] == 1


def test_global_caps_derive_from_the_fd_limit() -> None:
    config = EdgeConfig(reserved_fds=64)
    assert derived_max_connections(config, 256) == 192
    assert derived_max_connections(config, 10) == 16  # never absurdly low
    assert derived_max_connections(dataclasses.replace(config, max_connections=50), 256) == 50
    lim = Limits(EdgeConfig(exempt=(), max_connections=4, max_handshakes=3), IpFilter.of(), 1024)
    peers = [lim.admit(parse_address(f"192.0.2.{i}"), 0.0) for i in range(3)]
    assert lim.admit(parse_address("192.0.2.9"), 0.0) is Refusal.GLOBAL_HANDSHAKES
    lim.authenticated(peers[0])  # type: ignore[arg-type]
    assert isinstance(lim.admit(parse_address("192.0.2.9"), 0.0), Peer)
    assert lim.admit(parse_address("192.0.2.10"), 0.0) is Refusal.GLOBAL


def test_exempt_addresses_skip_per_ip_limits_only() -> None:
    config = EdgeConfig(per_ip_connections=1, max_connections=3)
    lim = Limits(config, IpFilter.of(), 1024)
    local = parse_address("127.0.0.1")
    assert all(isinstance(lim.admit(local, 0.0), Peer) for _ in range(3))
    assert lim.admit(local, 0.0) is Refusal.GLOBAL


def test_filter_refusals_are_counted() -> None:
    lim = Limits(EdgeConfig(), IpFilter.of(block=[parse_cidr("192.0.2.0/24")]), 1024)
    assert lim.admit(A, 0.0) is Refusal.FILTER
    assert lim.snapshot()["refused_filter"] == 1


def test_repeated_auth_failures_block_for_a_while(caplog: pytest.LogCaptureFixture) -> None:
    lim = limits(auth_fail_count=3, auth_fail_window_s=10.0, auth_block_s=60.0)
    caplog.set_level(logging.WARNING)
    assert not lim.auth_failed(A, 0.0)
    assert not lim.auth_failed(A, 1.0)
    assert lim.auth_failed(A, 2.0)
    assert lim.admit(A, 3.0) is Refusal.BLOCKED
    assert isinstance(lim.admit(B, 3.0), Peer)
    assert isinstance(lim.admit(A, 63.0), Peer)  # the block ended
    assert lim.snapshot()["auto_blocks"] == 1
    assert "blocked 192.0.2.1 for 60 s" in caplog.text


def test_failures_outside_the_window_do_not_add_up() -> None:
    lim = limits(auth_fail_count=3, auth_fail_window_s=10.0)
    for t in (0.0, 1.0, 20.0, 21.0, 40.0, 41.0):
        assert not lim.auth_failed(A, t)
    assert not limits(auth_fail_count=0).auth_failed(A, 0.0)  # 0 = never block


def test_ipv6_is_limited_per_64() -> None:
    lim = limits(per_ip_connections=2, per_ip_handshakes=100)
    one = [lim.admit(parse_address(f"2001:db8:0:1::{i}"), 0.0) for i in range(1, 4)]
    assert one[-1] is Refusal.PER_IP
    assert isinstance(lim.admit(parse_address("2001:db8:0:2::1"), 0.0), Peer)


def test_tables_stay_bounded_under_many_addresses() -> None:
    lim = limits(max_tracked_addresses=1000, auth_fail_count=1, auth_block_s=1000.0)
    for i in range(50_000):
        address = parse_address(f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::1")
        peer = lim.admit(address, float(i) * 1e-4)
        assert isinstance(peer, Peer)
        lim.closed(peer, handshaking=True)
        lim.auth_failed(address, float(i) * 1e-4)
    snap = lim.snapshot()
    assert snap["tracked_addresses"] <= 1000
    assert snap["blocked_addresses"] <= 1000
    assert snap["connections"] == snap["handshakes"] == 0


def test_idle_entries_expire_and_live_ones_stay() -> None:
    lim = limits(per_ip_rate_per_s=10.0, per_ip_burst=10, auth_fail_window_s=1.0)
    live = lim.admit(A, 0.0)
    lim.closed(lim.admit(B, 0.0), handshaking=True)  # type: ignore[arg-type]
    assert lim.expire(100.0) == 1
    assert lim.snapshot()["tracked_addresses"] == 1
    lim.closed(live, handshaking=True)  # type: ignore[arg-type]
    assert lim.expire(300.0) == 1


def test_the_handshake_cap_asks_for_room_only_for_admissible_connections() -> None:
    lim = Limits(EdgeConfig(exempt=(), max_handshakes=2, per_ip_handshakes=1,
                            block=("192.0.2.99",)),
                 IpFilter.of(block=[parse_cidr("192.0.2.99")]), 1024)
    asked: list[int] = []

    def make_room() -> bool:
        asked.append(1)
        return False

    first = lim.admit(A, 0.0, make_room)
    assert isinstance(first, Peer)
    assert isinstance(lim.admit(B, 0.0, make_room), Peer)
    assert lim.admit(parse_address("192.0.2.99"), 0.0, make_room) is Refusal.FILTER
    assert lim.admit(A, 0.0, make_room) is Refusal.PER_IP_HANDSHAKES  # A is at its own cap
    assert not asked
    assert lim.admit(parse_address("192.0.2.3"), 0.0, make_room) is Refusal.GLOBAL_HANDSHAKES
    assert asked == [1]

    def evict() -> bool:
        lim.closed(first, handshaking=True)  # type: ignore[arg-type]
        return True

    assert isinstance(lim.admit(parse_address("192.0.2.3"), 0.0, evict), Peer)
    assert lim.handshakes == 2
