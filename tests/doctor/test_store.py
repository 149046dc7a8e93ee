"""The store checks on real databases: SQLite files and the session's real MariaDB."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.config.database import SQLITE_FILE, resolve_database
from appliance.doctor.model import Subject, Verdict
from appliance.doctor.store import check_durability, check_store
from appliance.engine.clock import SystemClock
from appliance.storage import maintenance, migrations
from appliance.storage.mariadb.connection import open_raw
from tests.support.components import missing
from tests.support.mariadb import MariaDBServer


def subject(data_dir: Path, **settings: object) -> Subject:
    return Subject(load_config(None, {"storage.data_dir": data_dir, **settings}),
                   SystemClock().wall_ms())


def migrated(data_dir: Path) -> Path:
    location = resolve_database("", data_dir)
    maintenance.migrate(location, 10, SystemClock().wall_ms())
    assert location.sqlite_path is not None
    return location.sqlite_path


def test_a_database_not_made_yet_is_not_made_by_looking(data_dir: Path) -> None:
    found = check_store(subject(data_dir))
    assert found.verdict is Verdict.OK
    assert found.summary.endswith("not created yet (the server creates it at its first start)")
    assert not (data_dir / SQLITE_FILE).exists()


def test_migrated_pending_and_newer_schemas(data_dir: Path) -> None:
    path = migrated(data_dir)
    found = check_store(subject(data_dir))
    assert found.verdict is Verdict.OK, found
    known = [m.version for m in migrations.load("sqlite")]
    last, before, future = known[-1], known[-2], known[-1] + 1
    assert found.summary == f"SQLite {path}: reachable, schema version {last} (up to date)"
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT * FROM schema_migrations WHERE version = ?",
                         (last,)).fetchone()
        db.execute("DELETE FROM schema_migrations WHERE version = ?", (last,))
    found = check_store(subject(data_dir))
    assert found.verdict is Verdict.WARN
    assert f"schema version {before}, 1 migration(s) pending" in found.summary
    assert found.fix.startswith("tidings db migrate")
    assert found.figures["pending"] == [last]
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_migrations VALUES (?, ?, ?, ?)", row)
        db.execute("INSERT INTO schema_migrations VALUES (?, 'from_the_future', 'x', 0)",
                   (future,))
    found = check_store(subject(data_dir))
    assert found.verdict is Verdict.FAIL
    assert (f"schema version {future}, this executable knows up to {last}: this executable is"
            " older than the database") in found.summary
    assert (found.figures["schema_version"], found.figures["known_version"]) == (future, last)


def test_an_unreachable_database(data_dir: Path, tmp_path: Path) -> None:
    socket_path = tmp_path / "mysqld.sock"  # no server behind it
    found = check_store(subject(data_dir, **{"storage.database": str(socket_path),
                                             "storage.timeout_s": 1}))
    assert found.verdict is Verdict.FAIL
    assert found.summary.startswith("MariaDB database 'tidings' as ")
    assert ": unreachable: " in found.summary
    assert "start the database server" in found.fix


def test_looking_as_root_leaves_nothing_root_owned(data_dir: Path) -> None:
    if os.geteuid() != 0:
        missing("needs root (the case is root opening a service user's database)")
    path = migrated(data_dir)
    os.chown(path, 65534, 65534)  # the service's database
    assert not Path(f"{path}-wal").exists()
    # The doctor's own way in, as root: the files SQLite makes are the owner's.
    with maintenance.connection(resolve_database("", data_dir), 10) as conn:
        conn.execute("SELECT count(*) FROM schema_migrations").fetchall()
        for extra in ("-wal", "-shm"):
            st = Path(f"{path}{extra}").stat()
            assert (st.st_uid, st.st_gid) == (65534, 65534), extra
    assert check_store(subject(data_dir)).verdict is Verdict.OK
    assert Path(path).stat().st_uid == 65534


def test_durability_does_not_apply_to_sqlite(data_dir: Path) -> None:
    found = check_durability(subject(data_dir))
    assert found.verdict is Verdict.OK
    assert "innodb_flush_log_at_trx_commit does not apply" in found.summary


@pytest.mark.slow
def test_mariadb_flushing_less_than_every_commit_fails(data_dir: Path,
                                                      mariadb: MariaDBServer) -> None:
    mariadb.use_in(data_dir, "doctor")
    admin = open_raw(mariadb.admin, 10, database=False)
    try:
        admin.cursor().execute("SET GLOBAL innodb_flush_log_at_trx_commit = 2")
        found = check_durability(subject(data_dir))
        assert found.verdict is Verdict.FAIL
        assert found.summary.startswith("innodb_flush_log_at_trx_commit = 2: a crash")
        assert "SET GLOBAL innodb_flush_log_at_trx_commit = 1" in found.fix
        assert found.figures == {"innodb_flush_log_at_trx_commit": 2}
    finally:
        admin.cursor().execute("SET GLOBAL innodb_flush_log_at_trx_commit = 1")
        admin.close()
    found = check_durability(subject(data_dir))
    assert found.verdict is Verdict.OK
    assert found.figures == {"innodb_flush_log_at_trx_commit": 1}
    found = check_store(subject(data_dir))
    assert found.verdict is Verdict.WARN  # a fresh database: every migration pending
    assert found.figures["backend"] == "mariadb"
