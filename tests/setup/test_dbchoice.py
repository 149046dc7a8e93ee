"""The database answers end to end: the private MariaDB bootstrapped by the wizard, served on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.config.database import resolve_database
from appliance.dbserver import binaries
from appliance.setup import probe
from appliance.setup.dbchoice import SQLITE, answer_of, parse_choice
from tests.setup.conftest import HOSTNAME, Site, free_port, secret_of
from tests.support.components import missing
from tests.support.server import ServerProcess


@pytest.mark.slow
def test_the_private_mariadb_is_bootstrapped_and_the_first_message_is_stored_there(
        site: Site) -> None:
    if not binaries.server_installed():
        missing("MariaDB is not installed (apt-get install mariadb-server)")
    done = site.run("--yes", "--hostname", HOSTNAME, "--hostname-not-local-ok", "--tls",
                    "self-signed", "--port", str(free_port()), "--http-port", "none",
                    "--database", "private", "--app", "privateapp", check=True)
    assert "MariaDB " in done.stdout
    assert "database 'tidings' created" in done.stdout
    config = load_config(site.config)
    assert config.storage.database == "private"
    assert resolve_database(config.storage.database, site.data).private
    server = ServerProcess(site.data, "--redirect-port", "-1", command=[
        sys.executable, "-m", "appliance", "--config", str(site.config)])
    server.start(timeout=60)
    try:
        target = probe.Target("127.0.0.1", server.port, HOSTNAME)
        probe.health(target)
        sent = probe.send_first_message(target, secret_of(done.stdout), "welcome")
        assert sent["status"] == "SENT"
    finally:
        server.stop()


def test_database_answers_and_settings_map_both_ways(tmp_path: Path) -> None:
    assert parse_choice("sqlite", tmp_path).setting == SQLITE
    assert parse_choice(f"sqlite://{tmp_path}/tidings.sqlite3", tmp_path).answer == SQLITE
    system = parse_choice("mariadb", tmp_path)
    assert system.setting == "/run/mysqld/mysqld.sock"
    assert answer_of(system.setting, tmp_path) == "mariadb"
    assert answer_of("private", tmp_path) == "private"
    assert answer_of("", tmp_path) == SQLITE  # nothing recorded: the embedded store
    url = "mariadb://app:pw@db.example.com:3307/chat"
    assert answer_of(url, tmp_path) == url
