"""The SSRF rule: what the default policy refuses, and what `allow` lifts."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from appliance.errors import ConfigError, PreviewRefusedError
from appliance.media.previews.address import AddressPolicy


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "'this network'"),
    ("::", "unspecified"),
    ("10.0.0.1", "private address (RFC 1918)"),
    ("172.16.5.4", "private address (RFC 1918)"),
    ("192.168.1.1", "private address (RFC 1918)"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("169.254.169.254", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("198.18.0.1", "benchmarking"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("2001:db8::1", "documentation"),
    ("192.0.0.8", "IETF protocol assignment"),
    ("192.0.0.192", "IETF protocol assignment"),  # Oracle Cloud's metadata
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fec0::1", "site-local"),
    # IPv6 forms that reach IPv4: judged by the IPv4 they reach.
    ("::ffff:127.0.0.1", "IPv4-mapped address reaching 127.0.0.1, a loopback"),
    ("::ffff:10.1.2.3", "reaching 10.1.2.3, a private"),
    ("::ffff:169.254.169.254", "reaching 169.254.169.254, a cloud metadata"),
    ("::7f00:1", "IPv4-compatible"),
    ("64:ff9b::7f00:1", "NAT64 address (RFC 6052) reaching 127.0.0.1, a loopback"),
    ("64:ff9b::a00:1", "NAT64 address (RFC 6052) reaching 10.0.0.1"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    ("::ffff:0:7f00:1", "IPv4-translated address (RFC 6145) reaching 127.0.0.1"),
    ("2002:7f00:1::1", "6to4 address (RFC 3056) reaching 127.0.0.1"),
    ("2002:a00:1::1", "6to4 address (RFC 3056) reaching 10.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001:2::1", "IETF protocol assignment"),
    ("100::1", "discard-only"),
    ("4000::1", "outside IPv6 global unicast"),
])
def test_default_policy_refuses(address: str, reason: str) -> None:
    with pytest.raises(PreviewRefusedError) as refused:
        AddressPolicy().check(ip_address(address))
    assert reason in refused.value.reason
    assert address.split("::")[0] in refused.value.reason  # the address is named


@pytest.mark.parametrize("address", [
    "93.184.215.14", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "::ffff:8.8.8.8",
])
def test_default_policy_lets_public_addresses_through(address: str) -> None:
    AddressPolicy().check(ip_address(address))


@pytest.mark.parametrize(("host", "reason"), [
    ("localhost", "local name (.localhost)"),
    ("db.localhost", "local name (.localhost)"),
    ("printer.local", "local name (.local)"),
    ("metadata.google.internal", "local name (.internal)"),
    ("router.home.arpa", "local name (.home.arpa)"),
    ("wiki.corp", "local name (.corp)"),
    ("fileserver", "single-label"),
])
def test_local_names_are_refused_before_any_lookup(host: str, reason: str) -> None:
    with pytest.raises(PreviewRefusedError) as refused:
        AddressPolicy().check_name(host)
    assert reason in refused.value.reason


def test_one_refused_address_refuses_the_name() -> None:
    policy = AddressPolicy()
    policy.check_resolved("example.com", [ip_address("93.184.215.14")])
    with pytest.raises(PreviewRefusedError,
                       match=r"^example.com resolves to 10.0.0.1 is a private"):
        policy.check_resolved("example.com", [ip_address("93.184.215.14"),
                                              ip_address("10.0.0.1")])


def test_allowed_cidrs_and_names_reach_internal_hosts() -> None:
    policy = AddressPolicy(["10.1.0.0/16", "wiki.corp", "*.lab.example", "127.0.0.1"])
    policy.check(ip_address("10.1.2.3"))
    policy.check(ip_address("::ffff:10.1.2.3"))  # the mapped form of an allowed address
    policy.check(ip_address("127.0.0.1"))
    with pytest.raises(PreviewRefusedError, match="loopback"):
        policy.check(ip_address("127.0.0.2"))  # only what is listed
    with pytest.raises(PreviewRefusedError, match="private"):
        policy.check(ip_address("10.2.0.1"))
    policy.check_name("wiki.corp")
    policy.check_resolved("wiki.corp", [ip_address("192.168.7.7")])
    policy.check_resolved("build.lab.example", [ip_address("172.16.0.9")])
    # An allowed name still never reaches the metadata service or an unspecified address.
    with pytest.raises(PreviewRefusedError, match="cloud metadata"):
        policy.check_resolved("wiki.corp", [ip_address("169.254.169.254")])
    with pytest.raises(PreviewRefusedError, match="unspecified"):
        policy.check_resolved("wiki.corp", [ip_address("0.0.0.0")])
    with pytest.raises(PreviewRefusedError, match="private"):
        policy.check_resolved("other.corp.example", [ip_address("192.168.7.7")])


def test_bad_allow_entries_are_named() -> None:
    with pytest.raises(ConfigError) as bad:
        AddressPolicy(["10.0.0.0/8", "not a host!"])
    assert bad.value.key_path == "media.previews.allow[1]"
