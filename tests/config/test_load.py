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
    # WELCOME carries these as u32 (PROTOCOL.md §3.2): a larger one made every HELLO
    # that asked for the extension fields fail to encode its WELCOME.
    *((f"[limits]\n{name} = 4294967296\n", f"limits.{name}")
      for name in ("max_payload_bytes", "max_expiry_s", "window", "max_devices",
                   "keepalive_s", "max_frame_bytes")),
    # A REST array of MAX_BATCH messages must fit the budget of submitted messages.
    ("[limits]\nmax_app_submitted = 999\n", "limits.max_app_submitted"),
    ("[limits]\nmax_submitted = 10\n", "limits.max_submitted"),
    ("[transport]\nsend_timeout_s = 0\n", "transport.send_timeout_s"),
    ("[transport]\nkeepalive_timeout = 5\n", "transport.keepalive_timeout"),
    ("[transport]\nh2_body_bytes_total = 1024\n", "transport.h2_body_bytes_total"),
    ("[transport]\nmax_output_bytes = 100000\noutput_high_water_bytes = 200000\n",
     "transport.max_output_bytes"),
])
def test_a_bad_key_is_named(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key_path == key
    assert key in str(info.value)


def test_transport_bounds_have_safe_defaults_and_can_be_set(tmp_path: Path) -> None:
    transport = load_config().transport
    assert (transport.handshake_timeout_s, transport.request_timeout_s) == (10.0, 10.0)
    assert transport.output_high_water_bytes < transport.max_output_bytes
    path = tmp_path / "t.toml"
    path.write_text("[transport]\nrequest_timeout_s = 2.5\nh2_control_frame_burst = 50\n")
    transport = load_config(path).transport
    assert (transport.request_timeout_s, transport.h2_control_frame_burst) == (2.5, 50)


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
