"""``[metrics] allow``: every entry is checked, and a bad one is named by its index."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.errors import ConfigError
from appliance.metrics.config import MAX_ALLOW, allowed_networks


def _load(tmp_path: Path, toml: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "tidings.toml"
    path.write_text(toml)
    return load_config(path, {"storage.data_dir": tmp_path})


def test_the_default_is_the_operator_key_only(tmp_path: Path) -> None:
    config = _load(tmp_path, "")
    assert config.metrics.allow == ()
    assert len(allowed_networks(config.metrics)) == 0


def test_allowed_addresses_and_networks(tmp_path: Path) -> None:
    config = _load(tmp_path, '[metrics]\nallow = ["127.0.0.1/32", "10.1.0.0/16", "::1",'
                             ' "::ffff:192.0.2.7"]\n')
    networks = allowed_networks(config.metrics)
    for inside in ("127.0.0.1", "10.1.200.3", "::1", "192.0.2.7"):
        assert networks.contains(ipaddress.ip_address(inside)), inside
    for outside in ("127.0.0.2", "10.2.0.1", "::2"):
        assert not networks.contains(ipaddress.ip_address(outside)), outside


@pytest.mark.parametrize(("toml", "key"), [
    ('allow = ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "300.1.2.3/8"]', "metrics.allow[3]"),
    ('allow = ["10.0.0.0/33"]', "metrics.allow[0]"),
    ('allow = ["127.0.0.1", "localhost"]', "metrics.allow[1]"),
    ('allow = ["127.0.0.1", ""]', "metrics.allow[1]"),
    ('allow = "127.0.0.1/32"', "metrics.allow"),
    ("allow = [1]", "metrics.allow"),
    ("enabled = true", "metrics.enabled"),
])
def test_a_bad_entry_is_named(tmp_path: Path, toml: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, f"[metrics]\n{toml}\n")
    assert err.value.key_path == key


def test_the_allowlist_is_bounded(tmp_path: Path) -> None:
    entries = ", ".join(f'"10.0.{i // 256}.{i % 256}"' for i in range(MAX_ALLOW + 1))
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, f"[metrics]\nallow = [{entries}]\n")
    assert err.value.key_path == "metrics.allow"
    assert str(MAX_ALLOW) in str(err.value)
