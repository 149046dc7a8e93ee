from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.errors import ConfigError


def test_defaults_are_zero_configuration() -> None:
    config = load_config()
    assert (config.server.host, config.server.port) == ("127.0.0.1", 7447)
    assert config.limits.max_devices == 8
    assert config.limits.credentials_poll_s == 0.5


def test_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[server]\nport = 9000\n[limits]\nmax_devices = 3\n'
                    f'[storage]\ndata_dir = "{tmp_path}/d"\n')
    config = load_config(path, {"server.port": 9100, "server.host": None})
    assert config.server.port == 9100
    assert config.limits.max_devices == 3
    assert config.storage.data_dir == tmp_path / "d"


@pytest.mark.parametrize(("text", "key"), [
    ("[server]\nprot = 1\n", "server.prot"),
    ("[sever]\nport = 1\n", "sever"),
    ("[server]\nport = 'x'\n", "server.port"),
    ("[server]\nport = 70000\n", "server.port"),
    ("[limits]\nmax_devices = 0\n", "limits.max_devices"),
    ("[limits]\nwindow = true\n", "limits.window"),
    ("[limits]\ncredentials_poll_s = 0\n", "limits.credentials_poll_s"),
    ("[limits]\ncredentials_poll_s = 600\n", "limits.credentials_poll_s"),
    ("server = 3\n", "server"),
])
def test_a_bad_key_is_named(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key_path == key
    assert key in str(info.value)


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
