"""The one setting that chooses the store: ``[storage] database`` (SPEC M14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.config.database import (
    parse_database,
    record_database,
    resolve_database,
)
from appliance.errors import ConfigError

DATA = Path("/var/lib/tidings")


def test_sqlite_is_the_default_and_can_be_moved() -> None:
    assert parse_database("", DATA).sqlite_path == DATA / "tidings.sqlite3"
    assert parse_database("sqlite", DATA).sqlite_path == DATA / "tidings.sqlite3"
    assert parse_database("sqlite:///srv/x.sqlite3", DATA).sqlite_path == Path("/srv/x.sqlite3")


def test_mariadb_forms() -> None:
    private = parse_database("private", DATA)
    assert (private.kind, private.private, private.socket) == (
        "mariadb", True, "/var/lib/tidings/mariadb/mysqld.sock")
    by_socket = parse_database("/run/mysqld/mysqld.sock", DATA)
    assert (by_socket.socket, by_socket.database) == ("/run/mysqld/mysqld.sock", "tidings")
    url = parse_database("mariadb://app:s%40cret@db.example:3307/chat", DATA)
    assert (url.host, url.port, url.user, url.password, url.database, url.socket) == (
        "db.example", 3307, "app", "s@cret", "chat", "")
    local = parse_database("mariadb://tidings@localhost/chat?socket=/tmp/m.sock", DATA)
    assert (local.socket, local.user, local.database) == ("/tmp/m.sock", "tidings", "chat")
    assert "s@cret" not in url.describe()  # never print the password


@pytest.mark.parametrize(("value", "fragment"), [
    ("postgres://x/y", "must be 'sqlite', 'private'"),
    ("sqlite://relative.db", "absolute path"),
    ("mariadb://u@h/bad-name", "database name"),
    ("mariadb://u@h:notaport/x", "not a valid mariadb:// URL"),
    ("mariadb://u@h/x?sslmode=on", "unknown URL parameter 'sslmode'"),
    ("mariadb://u@h/x?socket=relative.sock", "socket path must be absolute"),
    ("/" + "s" * 120, "longer than 107 bytes"),
])
def test_a_wrong_value_names_the_key(value: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_database(value, DATA)
    assert info.value.key_path == "storage.database"


def test_config_file_checks_the_setting_at_load(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[storage]\ndatabase = "mysql://x/y"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key_path == "storage.database"


def test_the_recorded_choice_is_used_unless_the_setting_overrides(tmp_path: Path) -> None:
    assert resolve_database("", tmp_path).kind == "sqlite"
    recorded = record_database(parse_database("mariadb://svc@/chat?socket=/run/m.sock",
                                              tmp_path), tmp_path)
    assert recorded.stat().st_mode & 0o777 == 0o600  # a URL may carry a password
    chosen = resolve_database("", tmp_path)
    assert (chosen.kind, chosen.user, chosen.database) == ("mariadb", "svc", "chat")
    assert resolve_database("sqlite", tmp_path).kind == "sqlite"
    recorded.write_text("nonsense\n")
    with pytest.raises(ConfigError) as info:
        resolve_database("", tmp_path)
    assert info.value.key_path == str(recorded)  # names the file the bad value came from
