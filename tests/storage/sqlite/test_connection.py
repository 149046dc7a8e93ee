"""SQLite durability: FULL for every commit but a device registration's."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from appliance.storage.sqlite import SqliteStorage
from appliance.storage.sqlite.connection import SqliteConnection, open_connection

NOW = 1_700_000_000_000
FULL, NORMAL = 2, 1


def test_registration_skips_its_fsync_and_leaves_the_connection_at_full(tmp_path: Path) -> None:
    async def go() -> None:
        store = await SqliteStorage.open(tmp_path / "s.sqlite3", NOW, server=True)
        try:
            conn = store._writer.conn
            assert isinstance(conn, SqliteConnection)
            seen: list[int] = []
            conn.raw.set_trace_callback(lambda sql: seen.append(
                conn.raw.execute("PRAGMA synchronous").fetchone()[0])
                if sql == "COMMIT" else None)
            user = (await store.create_user(1, "alice", NOW)).user_id
            await store.register_device(user, b"d1", NOW, 0)
            conn.raw.set_trace_callback(None)
            assert seen == [FULL, NORMAL]  # the admin change, then the registration
            assert conn.raw.execute("PRAGMA synchronous").fetchone()[0] == FULL
        finally:
            await store.close()

    asyncio.run(go())


def test_a_failed_relaxed_transaction_restores_full(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    conn = SqliteConnection(open_connection(path))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("PRAGMA busy_timeout = 0")
    conn.raw.execute("PRAGMA busy_timeout = 0")
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    with pytest.raises(sqlite3.OperationalError):
        conn.begin(durable=False)
    conn.rollback()
    assert conn.raw.execute("PRAGMA synchronous").fetchone()[0] == FULL
    blocker.execute("ROLLBACK")
    blocker.close()
    conn.close()
