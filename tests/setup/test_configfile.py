"""The configuration file: edited in place (comments kept), replaced atomically or not at all."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.errors import ConfigError, LifecycleError
from appliance.setup.answers import Answers
from appliance.setup.configfile import owner_for, read, updated, write_atomically
from appliance.system import layout

ANNOTATED = """\
# the operator's file
[server]
port = 8443  # chosen by hand
hostname = "chat.example.com"

[tls]
cert = "/etc/ssl/chat.pem"   # renewed by cron
key = "/etc/ssl/chat.key"

[limits]
max_devices = 3  # kept
"""


def _answers(**changes: object) -> Answers:
    base = {"hostname": "chat.example.com", "tls": "files", "cert": "/etc/ssl/chat.pem",
            "key": "/etc/ssl/chat.key", "port": 8443, "http_port": -1, "listen_address": "",
            "database": "sqlite", "app": "myapp"}
    return Answers(**{**base, **changes})  # type: ignore[arg-type]


def test_only_changed_answers_touch_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tidings.toml"
    path.write_text(ANNOTATED)
    text = updated(read(path), _answers(port=9443), tmp_path, "sqlite")
    assert "port = 9443  # chosen by hand\n" in text  # even a changed value keeps its comment
    for kept in ("# the operator's file", 'cert = "/etc/ssl/chat.pem"   # renewed by cron',
                 "max_devices = 3  # kept"):
        assert kept in text


def test_switching_to_acme_drops_the_files_and_keeps_the_other_names(tmp_path: Path) -> None:
    path = tmp_path / "tidings.toml"
    path.write_text(ANNOTATED + '\n[acme]\nissuers = ["letsencrypt-staging"]\n')
    text = updated(read(path), _answers(tls="acme", acme_email="ops@example.com"), tmp_path,
                   "sqlite")
    path.write_text(text)
    config = load_config(path)
    assert (config.tls.cert, config.tls.key) == ("", "")
    assert config.acme.hostnames == ("chat.example.com",)
    assert config.acme.issuers == ("letsencrypt-staging",)
    assert config.acme.email == "ops@example.com"
    # back to self-signed: neither certificate files nor ACME names
    path.write_text(updated(read(path), _answers(tls="self-signed"), tmp_path, "sqlite"))
    config = load_config(path)
    assert (config.tls.cert, config.acme.hostnames) == ("", ())
    assert config.acme.email == "ops@example.com"  # untouched: only what the mode needs goes


def test_a_new_file_is_0640_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "tidings.toml"
    text = updated(read(path), _answers(tls="self-signed"), tmp_path / "data", "sqlite")
    write_atomically(path, text, None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
    assert load_config(path).storage.data_dir == tmp_path / "data"
    assert text.startswith("# Tidings configuration, written by `tidings setup`")


def test_a_text_that_does_not_load_replaces_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tidings.toml"
    path.write_text(ANNOTATED)
    with pytest.raises(ConfigError, match=r"server\.prot: unknown key"):
        write_atomically(path, ANNOTATED.replace("port = 8443", "prot = 8443"), None)
    assert path.read_text() == ANNOTATED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tidings.toml"]  # no leftovers


def test_a_file_that_is_not_toml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "tidings.toml"
    path.write_text("[server\nport = 1\n")
    with pytest.raises(ConfigError, match=r"not valid TOML .* fix or remove it"):
        read(path)


def test_the_owner_is_root_and_the_service_group_when_root() -> None:
    if os.geteuid() != 0:
        assert owner_for(layout.CONFIG_FILE) is None
        return
    try:
        gid = grp.getgrnam(layout.SERVICE_USER).gr_gid
    except KeyError:
        with pytest.raises(LifecycleError, match="run the installer first"):
            owner_for(layout.CONFIG_FILE)
        assert owner_for(Path("/tmp/elsewhere.toml")) is None
    else:
        assert owner_for(layout.CONFIG_FILE) == (0, gid)
