"""A transaction chosen as a deadlock's victim runs again (storage.sql.writes)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from appliance.errors import StorageUnavailableError
from appliance.storage.models import NewMessage, Outcome, StoredCertificate, WriteBatch
from appliance.storage.sql import certificates
from appliance.storage.sql.migrate import migrate
from appliance.storage.sql.writes import Writer
from appliance.storage.sqlite.connection import SqliteConnection, open_connection

NOW = 1_700_000_000_000


class DeadlockingConnection(SqliteConnection):
    """SQLite standing in for a backend whose COMMIT can lose a deadlock."""

    deadlocks = 0

    def commit(self) -> None:
        if self.deadlocks:
            self.deadlocks -= 1
            self.rollback()
            raise sqlite3.OperationalError("Deadlock found when trying to get lock")
        super().commit()

    def retryable(self, exc: BaseException) -> bool:
        return "Deadlock" in str(exc)


def _writer(tmp_path: Path) -> tuple[Writer, DeadlockingConnection, int, int]:
    conn = DeadlockingConnection(open_connection(tmp_path / "w.sqlite3"))
    migrate(conn, NOW)
    writer = Writer(conn)
    conn.raw.executemany("INSERT INTO users (app_id, address, created_ms) VALUES (1, ?, 0)",
                         [(b"a",), (b"b",)])
    alice, bob = (r[0] for r in conn.raw.execute("SELECT id FROM users ORDER BY address"))
    writer.register_devices([(bob, b"b1", NOW, 0)])
    return writer, conn, alice, writer.register_devices([(alice, b"a1", NOW, 0)])[0].device_rowid


def _batch(alice: int, device: int, *ids: int) -> WriteBatch:
    return WriteBatch(messages=[NewMessage(1, alice, device, i, b"b", 0, 0, NOW + 60_000, 0, 3,
                                           0, b"x") for i in ids])


def test_a_deadlocked_batch_runs_again_and_stores_once(tmp_path: Path) -> None:
    writer, conn, alice, a1 = _writer(tmp_path)
    conn.deadlocks = 1
    result = writer.apply(_batch(alice, a1, 1, 2), NOW)
    assert [a.outcome for a in result.accepted] == [Outcome.STORED, Outcome.STORED]
    assert conn.raw.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
    again = writer.apply(_batch(alice, a1, 2, 3), NOW)
    assert [a.outcome for a in again.accepted] == [Outcome.DUPLICATE, Outcome.STORED]
    assert again.accepted[1].seq > result.accepted[1].seq  # counters read afresh, not reused


def test_a_second_deadlock_fails_the_batch(tmp_path: Path) -> None:
    writer, conn, alice, a1 = _writer(tmp_path)
    conn.deadlocks = 2
    with pytest.raises(StorageUnavailableError, match="Deadlock"):
        writer.apply(_batch(alice, a1, 1), NOW)
    assert conn.raw.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    assert writer.apply(_batch(alice, a1, 1), NOW).accepted[0].outcome is Outcome.STORED


def test_a_deadlocked_certificate_save_runs_again_and_saves_once(tmp_path: Path) -> None:
    writer, conn, _, _ = _writer(tmp_path)
    cert = StoredCertificate("a.test", b"chain", b"key", "https://ca.test/dir", NOW, NOW + 1)
    version = conn.raw.execute("SELECT version FROM directory_version").fetchone()[0]
    conn.deadlocks = 2
    assert writer.run_meta(certificates.save_certificate, cert) == 1
    assert writer.run_meta(certificates.save_certificate, cert) == 2
    conn.deadlocks = 3  # InnoDB keeps choosing it: the caller is told, nothing is kept
    with pytest.raises(StorageUnavailableError, match="Deadlock"):
        writer.run_meta(certificates.save_certificate, cert)
    assert certificates.certificate_version(conn, "a.test") == 2
    assert writer.run_meta(certificates.acquire_lease, "acme", "me", NOW, 1000)
    assert conn.raw.execute("SELECT version FROM directory_version").fetchone()[0] == version
