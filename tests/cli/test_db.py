"""`tidings db status|migrate|bootstrap|copy` on real databases (SPEC M14, issue 5).

The bootstrap of the machine's MariaDB server runs the frozen executable as a
real unprivileged service user (unix_socket authentication: no password
anywhere); the private server is initialised in the test's data directory and
supervised by `tidings serve`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mariadb as driver
import pytest

from appliance.config.database import parse_database
from appliance.dbserver import binaries
from appliance.dbserver.private import socket_live
from appliance.protocol.wire import Message, Status, StatusReport
from appliance.storage import migrations
from appliance.storage.mariadb.connection import open_raw
from appliance.storage.sql.copy import TABLES
from tests.conftest import StoreBackend
from tests.support.client import Client
from tests.support.components import frozen_binary, missing
from tests.support.mariadb import MariaDBServer
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

#: Every migration this tree has: what a fresh database gets.
KNOWN = migrations.load("sqlite")
APPLIED_ALL = "applied migrations " + ", ".join(f"{m.version:04d}" for m in KNOWN)
SYSTEM_SOCKET = "/run/mysqld/mysqld.sock"
SERVICE_USER = "tidings-ci"


def tidings(data: Path, *args: str, user: str | None = None, check: bool = True,
            binary: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI on a data directory: this interpreter, or `binary` run as `user`."""
    command = [str(binary)] if binary else [sys.executable, "-m", "appliance"]
    if user:
        command = [*as_user(user), *command]
    done = subprocess.run([*command, "--data-dir", str(data), *args], capture_output=True,
                          text=True, timeout=180, check=False, stdin=subprocess.DEVNULL)
    if check:
        assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stderr}"
    return done


def as_user(user: str) -> list[str]:
    """Run as `user`; setpriv execs (no parent in between to eat SIGTERM's exit status)."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]


# --- status and migrate ---------------------------------------------------------------


def test_status_then_migrate_then_status(tmp_path: Path, store_backend: StoreBackend) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store_backend.prepare(data)
    before = tidings(data, "db", "status").stdout
    assert "pending  0001 initial" in before
    assert f"{len(KNOWN)} migration(s) pending" in before
    assert tidings(data, "db", "migrate").stdout.strip() == APPLIED_ALL
    after = tidings(data, "db", "status").stdout
    assert f"applied  {KNOWN[-1].version:04d} {KNOWN[-1].name}  sha256:" in after
    assert "schema up to date" in after
    assert tidings(data, "db", "migrate").stdout.strip() == "schema already up to date"


def test_two_processes_migrating_at_once_apply_each_migration_once(
        tmp_path: Path, mariadb: MariaDBServer) -> None:
    data = tmp_path / "data"
    data.mkdir()
    location = mariadb.use_in(data, "race")
    procs = [subprocess.Popen([sys.executable, "-m", "appliance", "--data-dir", str(data),
                               "db", "migrate"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    said = sorted(out.strip() for out, _ in outs)
    assert said == [APPLIED_ALL, "schema already up to date", "schema already up to date"]
    conn = open_raw(location, 10)
    try:
        cur = conn.cursor()
        cur.execute("SELECT version FROM schema_migrations ORDER BY version")
        assert [v for (v,) in cur.fetchall()] == [m.version for m in KNOWN]
    finally:
        conn.close()


def test_a_changed_migration_is_refused(tmp_path: Path, store_backend: StoreBackend) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store_backend.prepare(data)
    tidings(data, "db", "migrate")
    _execute(data, "UPDATE schema_migrations SET checksum = 'x' WHERE version = 2")
    done = tidings(data, "db", "status", check=False)
    assert done.returncode != 0
    assert "migration 2 (app_secrets) differs from the one applied" in done.stderr
    assert "Traceback" not in done.stderr


def _execute(data: Path, sql: str) -> None:
    location = parse_database((data / "database").read_text().strip()
                              if (data / "database").exists() else "", data)
    if location.kind == "sqlite":
        assert location.sqlite_path is not None
        with sqlite3.connect(location.sqlite_path) as conn:
            conn.execute(sql)
        return
    conn = open_raw(location, 10)
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


def test_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "database").write_text(f"{tmp_path}/nothing-here.sock\n")
    done = tidings(data, "db", "status", check=False)
    assert done.returncode != 0
    assert "cannot connect to MariaDB database 'tidings' as" in done.stderr
    assert "Traceback" not in done.stderr
    (data / "database").write_text("postgres://x/y\n")
    done = tidings(data, "db", "status", check=False)
    assert done.returncode != 0
    assert str(data / "database") in done.stderr  # names where the bad value is
    assert "Traceback" not in done.stderr


# --- bootstrap on the machine's server ------------------------------------------------


def _system_server() -> None:
    if os.geteuid() != 0:
        missing("bootstrapping the machine's MariaDB server needs root")
    if not binaries.server_installed() or not socket_live(Path(SYSTEM_SOCKET)):
        missing(f"no MariaDB server answers on {SYSTEM_SOCKET}: install mariadb-server and"
                " start it (packaging/dev.sh test does)")


def _service_user() -> str:
    done = subprocess.run(["id", "-u", SERVICE_USER], capture_output=True, check=False)
    if done.returncode != 0:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--shell", "/usr/sbin/nologin", SERVICE_USER], check=True)
    return SERVICE_USER


def _as_system_admin(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    admin = parse_database(SYSTEM_SOCKET, Path("/"))  # root by unix_socket
    conn = open_raw(admin, 10, database=False)
    try:
        cur = conn.cursor()
        cur.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


@pytest.fixture
def system_database() -> Iterator[str]:
    """A database name on the machine's server, dropped afterwards."""
    _system_server()
    name = f"tidings_ci_{os.getpid()}"
    _as_system_admin(f"DROP DATABASE IF EXISTS `{name}`")
    yield name
    _as_system_admin(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def service_data_dir() -> Iterator[Path]:
    """A data directory outside pytest's private tmp: the service user must reach it."""
    data = Path(tempfile.mkdtemp(prefix="tidings-test-", dir="/tmp"))
    try:
        yield data
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def service_binary() -> Iterator[Path]:
    """The frozen executable where any user may run it (the checkout may be in /root)."""
    built = frozen_binary()
    where = Path(tempfile.mkdtemp(prefix="tidings-bin-", dir="/tmp"))
    try:
        where.chmod(0o755)
        shutil.copy2(built, where / "tidings")
        yield where / "tidings"
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_bootstrap_on_the_system_server_with_socket_auth_twice(
        system_database: str, service_data_dir: Path, service_binary: Path) -> None:
    binary = service_binary
    user = _service_user()
    data = service_data_dir
    args = ("db", "bootstrap", "--service-user", user, "--name", system_database,
            "--no-install-server")
    first = tidings(data, *args, binary=binary).stdout
    assert f"database '{system_database}' created" in first
    assert f"account '{user}'@localhost (unix_socket, no password)" in first
    assert APPLIED_ALL in first
    second = tidings(data, *args, binary=binary).stdout
    assert f"database '{system_database}' exists" in second
    assert f"account '{user}'@localhost (unix_socket, no password) exists" in second
    assert "applied migrations" not in second
    [(plugin, secret)] = _as_system_admin(
        "SELECT JSON_VALUE(Priv, '$.plugin'), JSON_VALUE(Priv, '$.authentication_string')"
        " FROM mysql.global_priv WHERE User = ? AND Host = 'localhost'", (user,))
    assert (plugin, secret or "") == ("unix_socket", "")  # no password anywhere
    recorded = (data / "database").read_text()
    assert f"mariadb://{user}@/{system_database}?socket={SYSTEM_SOCKET}" in recorded
    assert ":" not in recorded.split("@")[0].removeprefix("mariadb://")  # no password

    # The service user, with no password, runs the admin commands and the server.
    tidings(data, "user", "add", "alice", user=user, binary=binary)
    tidings(data, "user", "add", "bob", user=user, binary=binary)
    tokens = {name: tidings(data, "user", "token", name, user=user, binary=binary
                            ).stdout.strip() for name in ("alice", "bob")}
    assert "schema up to date" in tidings(data, "db", "status", user=user, binary=binary).stdout
    server = ServerProcess(data, command=[*as_user(user), str(binary)])
    server.start()
    try:
        asyncio.run(_exchange(server, tokens["alice"], tokens["bob"], 1))
    finally:
        assert server.stop() == 0
    # Root is not the service user: its socket identity does not open that account.
    with pytest.raises(driver.Error, match="Access denied"):
        driver.connect(user=user, unix_socket=SYSTEM_SOCKET, database=system_database)


async def _exchange(server: ServerProcess, token_a: str, token_b: str, msg_id: int) -> None:
    alice = await Client.connect(server.host, server.port, token_a)
    bob = await Client.connect(server.host, server.port, token_b)
    try:
        alice.send(Message(msg_id, b"bob", b"over MariaDB"))
        status = await _sent(alice, msg_id)
        assert status.status == Status.SENT
        got = await bob.message()
        assert got.payload == b"over MariaDB"
    finally:
        await alice.close()
        await bob.close()


async def _sent(client: Client, msg_id: int, timeout: float = 30.0) -> StatusReport:
    async with asyncio.timeout(timeout):
        while True:
            status = await client.status(timeout)
            if status.id == msg_id and not status.report_seq:
                return status


# --- the private server ---------------------------------------------------------------


def test_private_server_bootstrap_twice_then_supervised_by_serve(tmp_path: Path) -> None:
    if not binaries.server_installed():
        missing("MariaDB is not installed (apt-get install mariadb-server)")
    data = tmp_path / "data"
    first = tidings(data, "db", "bootstrap", "--private", "--no-install-server").stdout
    assert f"initialised a private MariaDB server in {data / 'mariadb'}" in first
    assert "database 'tidings' created" in first
    assert APPLIED_ALL in first
    socket = data / "mariadb" / "mysqld.sock"
    assert not socket_live(socket)  # the bootstrap stops what it started
    second = tidings(data, "db", "bootstrap", "--private", "--no-install-server").stdout
    assert "initialised" not in second
    assert "database 'tidings' exists" in second
    assert "applied migrations" not in second
    assert (data / "database").read_text().strip() == "private"
    assert (data / "mariadb" / "data").stat().st_mode & 0o077 == 0

    tokens, _ = provision(data, ["alice", "bob"])  # starts and stops it around the work
    server = ServerProcess(data)
    server.start()
    try:
        assert "started the private MariaDB server" in server.output
        asyncio.run(_exchange(server, tokens["alice"], tokens["bob"], 1))
        mariadbd = int((data / "mariadb" / "mysqld.pid").read_text())
        asyncio.run(_crash_then_resend_until_sent(server, tokens["alice"], mariadbd))
    finally:
        assert server.stop() == 0
    assert "private MariaDB server exited" in server.output
    assert not socket_live(socket)  # stopped with the server


def test_private_server_for_a_service_user_stays_that_users(service_data_dir: Path,
                                                           service_binary: Path) -> None:
    if os.geteuid() != 0:
        missing("bootstrapping for a service user needs root")
    if not binaries.server_installed():
        missing("MariaDB is not installed (apt-get install mariadb-server)")
    user = _service_user()
    data = service_data_dir
    tidings(data, "db", "bootstrap", "--private", "--service-user", user,
            "--no-install-server")
    # Root's later commands start the server as its owner, never as root.
    tidings(data, "user", "add", "alice")
    tidings(data, "user", "add", "bob", user=user, binary=service_binary)
    assert tidings(data, "user", "list").stdout.split() == ["alice", "bob"]
    owners = {p.owner() for p in (data / "mariadb").rglob("*")}
    assert owners == {user}, owners
    assert not socket_live(data / "mariadb" / "mysqld.sock")


async def _crash_then_resend_until_sent(server: ServerProcess, token: str,
                                        mariadbd: int) -> None:
    """SIGKILL mariadbd under a connected app, which resends after FAILED until SENT."""
    alice = await Client.connect(server.host, server.port, token)
    try:
        os.kill(mariadbd, 9)  # a crash: serve restarts it; alice stays connected
        async with asyncio.timeout(60):
            while True:
                alice.send(Message(2, b"bob", b"after the crash"))
                status = await _sent(alice, 2)
                if status.status == Status.SENT:
                    return
                assert status.status == Status.FAILED, status
                await asyncio.sleep(0.5)  # the app's retry backoff
    finally:
        await alice.close()


# --- copy ----------------------------------------------------------------------------


def _dump(data: Path, target: str | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in key order, as plain Python values."""
    text = target or (data / "database").read_text().strip()
    location = parse_database(text, data)
    out: dict[str, list[tuple[Any, ...]]] = {}
    if location.kind == "sqlite":
        assert location.sqlite_path is not None
        conn: Any = sqlite3.connect(location.sqlite_path)
    else:
        conn = open_raw(location, 10)
    try:
        for table in TABLES:
            cur = conn.cursor()
            cur.execute(f"SELECT {', '.join(table.columns)} FROM {table.name}"
                        f" ORDER BY {', '.join(table.key)}")
            out[table.name] = [tuple(bytes(v) if isinstance(v, bytearray) else v for v in row)
                               for row in cur.fetchall()]
    finally:
        conn.close()
    return out


async def _traffic(server: ServerProcess, tokens: dict[str, str], group: int) -> None:
    """Leave messages in every state: read, delivered, queued, group, receipts pending."""
    alice = await Client.connect(server.host, server.port, tokens["alice"])
    bob = await Client.connect(server.host, server.port, tokens["bob"])
    try:
        for i in (1, 2):
            alice.send(Message(i, b"bob", f"m{i}".encode()))
            await _sent(alice, i)
            await bob.message()
        bob.read(b"alice", (1,))
        await bob.close()
        alice.send(Message(3, b"bob", b"queued", priority=5))
        alice.send(Message(4, b"", b"to the team", group_id=group))
        await _sent(alice, 3)
        await _sent(alice, 4)
    finally:
        await alice.close()
        await bob.close()


def test_copy_sqlite_to_mariadb_and_back_preserves_everything(
        tmp_path: Path, mariadb: MariaDBServer) -> None:
    data = tmp_path / "data"
    data.mkdir()
    tokens, groups = provision(data, ["alice", "bob", "carol"],
                               {"team": ["alice", "bob", "carol"]})
    server = ServerProcess(data)
    server.start()
    try:
        asyncio.run(_traffic(server, tokens, groups["team"]))
        # A server is running: the copy refuses, and changes nothing.
        target = mariadb.database("copy").url()
        refused = tidings(data, "db", "copy", "--to", target, check=False)
        assert refused.returncode != 0
        assert "another tidings server" in refused.stderr
    finally:
        assert server.stop() == 0
    _certificate_rows(data)
    original = _dump(data, "sqlite")
    assert len(original["certificates"]) == 1
    assert len(original["messages"]) == 4
    assert original["receipts"]  # DELIVERED and READ reports for alice

    out = tidings(data, "db", "copy", "--to", target).stdout
    assert "copied" in out
    assert "the server now uses the copy" in out
    assert _dump(data) == original  # row for row, value for value

    again = tidings(data, "--database", "sqlite", "db", "copy", "--to", target, "--no-switch",
                    check=False)
    assert again.returncode != 0
    assert "already holds users" in again.stderr  # never merges into a used database

    # The server runs on the copy: bob's queue and alice's statuses were kept.
    server = ServerProcess(data)
    server.start()
    try:
        asyncio.run(_after_copy(server, tokens))
    finally:
        assert server.stop() == 0
    on_mariadb = _dump(data)
    back = f"sqlite://{tmp_path}/back.sqlite3"
    tidings(data, "db", "copy", "--to", back)
    assert _dump(data) == on_mariadb
    assert (data / "database").read_text().strip() == back


def _certificate_rows(data: Path) -> None:
    """What the ACME manager leaves in the store (issue 13): a certificate, a backoff."""
    path = parse_database("sqlite", data).sqlite_path
    assert path is not None
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("INSERT INTO certificates VALUES ('a.test,b.test', ?, ?, 'https://ca/d',"
                         " 1, 2, 3)", (bytes(range(256)) * 300, b"\x00key"))
            conn.execute("INSERT INTO renewal_state VALUES ('c.test', 2, 5, 4, 'rate ✗', 2, 3)")
            conn.execute("INSERT INTO leases VALUES ('acme', 'node-a', 9)")  # not copied
    finally:
        conn.close()


async def _after_copy(server: ServerProcess, tokens: dict[str, str]) -> None:
    bob = await Client.connect(server.host, server.port, tokens["bob"])
    alice = await Client.connect(server.host, server.port, tokens["alice"])
    try:
        got = [await bob.message(), await bob.message()]
        assert sorted(m.payload for m in got) == [b"queued", b"to the team"]
        alice.send(Message(1, b"bob", b"m1"))  # a resend: answered with the stored status
        assert (await _sent(alice, 1)).status == Status.READ
    finally:
        await alice.close()
        await bob.close()


def test_bootstrap_without_mariadb_installed_asks_and_says_how(tmp_path: Path) -> None:
    env = {**os.environ, "TIDINGS_MARIADB_PATH": str(tmp_path / "no-binaries-here")}
    for private in ([], ["--private"]):
        done = subprocess.run(
            [sys.executable, "-m", "appliance", "--data-dir", str(tmp_path / "data"), "db",
             "bootstrap", *private, "--no-install-server"],
            capture_output=True, text=True, check=False, env=env, stdin=subprocess.DEVNULL)
        assert done.returncode != 0
        assert "MariaDB is not installed; install mariadb-server" in done.stderr
        assert "--install-server" in done.stderr
        assert "Traceback" not in done.stderr
    # Not a terminal and no flag: the operator was not asked, so nothing is installed.
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "--data-dir", str(tmp_path / "data"), "db",
         "bootstrap", "--private"], capture_output=True, text=True, check=False, env=env,
        stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    assert "MariaDB is not installed" in done.stderr
    assert not (tmp_path / "data" / "database").exists()  # nothing recorded
