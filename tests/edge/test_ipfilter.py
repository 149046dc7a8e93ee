"""The IP filter's decisions and their cost (pure, no sockets)."""

from __future__ import annotations

import ipaddress
import time

import pytest
from hypothesis import given, strategies as st

from appliance.edge.ipfilter import (
    CidrSet,
    IpFilter,
    RangeSet,
    parse_address,
    parse_cidr,
    read_cidrs,
)
from appliance.errors import UsageError


def addr(text: str):  # type: ignore[no-untyped-def]
    return parse_address(text)


def test_block_wins_and_an_empty_allow_list_allows_everyone() -> None:
    open_filter = IpFilter.of(block=[parse_cidr("10.0.0.0/8")])
    assert open_filter.permits(addr("192.0.2.1"))
    assert not open_filter.permits(addr("10.1.2.3"))
    office = IpFilter.of(allow=[parse_cidr("10.0.0.0/8")], block=[parse_cidr("10.9.9.9")])
    assert office.permits(addr("10.1.2.3"))
    assert not office.permits(addr("10.9.9.9"))  # blocked inside an allowed range
    assert not office.permits(addr("192.0.2.1"))  # not allowed


def test_ipv4_mapped_ipv6_is_the_ipv4_address() -> None:
    f = IpFilter.of(block=[parse_cidr("192.0.2.0/24")])
    assert not f.permits(addr("::ffff:192.0.2.7"))
    assert f.permits(addr("::ffff:198.51.100.7"))
    g = IpFilter.of(block=[parse_cidr("::ffff:192.0.2.0/120")])
    assert not g.permits(addr("192.0.2.200"))
    assert parse_cidr("::ffff:10.0.0.0/104") == ipaddress.IPv4Network("10.0.0.0/8")


def test_ipv6_ranges_and_zone_ids() -> None:
    f = IpFilter.of(block=[parse_cidr("2001:db8::/32")])
    assert not f.permits(addr("2001:db8:1::1"))
    assert f.permits(addr("2001:db9::1"))
    assert not f.permits(addr("2001:db8::1%eth0"))
    assert f.permits(addr("10.0.0.1"))  # families never mix


@pytest.mark.parametrize("bad", ["", "nonsense", "10.0.0.0/33", "1.2.3.4.5", "::g", "x" * 100])
def test_bad_cidrs_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_cidr(bad)


def test_files_name_the_bad_line() -> None:
    with pytest.raises(UsageError, match=r"block\.txt:3"):
        read_cidrs(["# comment", "10.0.0.0/8", "bad"], "block.txt")
    assert read_cidrs(["10.0.0.1 # one host", "", "  2001:db8::/48  "], "f") == [
        ipaddress.IPv4Network("10.0.0.1/32"), ipaddress.IPv6Network("2001:db8::/48")]


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 10_000)), max_size=50),
       st.integers(0, 2**32 - 1))
def test_rangeset_agrees_with_a_linear_scan(ranges: list[tuple[int, int]], probe: int) -> None:
    spans = [(s, min(2**32 - 1, s + n)) for s, n in ranges]
    assert RangeSet(spans).contains(probe) == any(s <= probe <= e for s, e in spans)


def test_100000_cidrs_load_in_seconds_and_look_up_in_microseconds() -> None:
    networks = [ipaddress.IPv4Network(((10 << 24) + (i << 8), 24)) for i in range(50_000)]
    networks += [ipaddress.IPv6Network(((0x2001_0db8 << 96) + (i << 80), 48))
                 for i in range(50_000)]
    started = time.perf_counter()
    f = IpFilter.of(block=networks)
    built = time.perf_counter() - started
    assert len(f.block) == 100_000
    probes = [addr("10.0.5.1"), addr("192.0.2.1"), addr("2001:db8:0:1::1"), addr("2001:db9::1")]
    started = time.perf_counter()
    for _ in range(25_000):
        for probe in probes:
            f.permits(probe)
    per_lookup = (time.perf_counter() - started) / 100_000
    assert not f.permits(probes[0])
    assert f.permits(probes[1])
    assert not f.permits(probes[2])
    assert f.permits(probes[3])
    # Generous bounds (a shared 2-core machine): O(log n) is ~1 us, a scan would be ~10 ms.
    assert per_lookup < 50e-6, per_lookup
    assert built < 20, built


def test_cidrset_deduplicates_and_sorts() -> None:
    s = CidrSet([parse_cidr("10.0.0.0/8"), parse_cidr("10.0.0.0/8"), parse_cidr("::1")])
    assert [str(n) for n in s.networks] == ["10.0.0.0/8", "::1/128"]
