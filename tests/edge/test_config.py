"""The ``[edge]`` table: defaults, types, CIDRs and ranges checked at load, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.errors import ConfigError


def test_defaults_are_safe() -> None:
    edge = load_config(None).edge
    assert edge.allow == edge.block == edge.trusted_proxies == ()
    assert edge.max_connections == 0  # derived from RLIMIT_NOFILE
    assert edge.per_ip_connections > 0
    assert edge.auth_fail_count > 0


def test_lists_and_numbers_load(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[edge]\nblock = ["10.0.0.0/8", "2001:db8::/32"]\n'
                    'trusted_proxies = ["127.0.0.1"]\nper_ip_connections = 5\n'
                    'proxy_header_timeout_s = 2\n')
    edge = load_config(path).edge
    assert edge.block == ("10.0.0.0/8", "2001:db8::/32")
    assert edge.per_ip_connections == 5
    assert edge.proxy_header_timeout_s == 2.0


@pytest.mark.parametrize(("toml", "key"), [
    ('block = ["10.0.0.0/33"]', "edge.block"),
    ('allow = ["nonsense"]', "edge.allow"),
    ('trusted_proxies = ["1.2.3"]', "edge.trusted_proxies"),
    ('block = "10.0.0.0/8"', "edge.block"),
    ("block = [1]", "edge.block"),
    ("per_ip_connections = 0", "edge.per_ip_connections"),
    ("ipv6_prefix = 129", "edge.ipv6_prefix"),
    ('per_ip_rate_per_s = "fast"', "edge.per_ip_rate_per_s"),
    ("no_such_key = 1", "edge.no_such_key"),
])
def test_bad_values_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[edge]\n{toml}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key_path == key
