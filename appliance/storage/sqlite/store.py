"""`SqliteStorage`: the embedded default backend (SPEC M14).

The shared SQL code (`appliance.storage.sql`) on one SQLite file in WAL mode:
one writer thread, one reader thread, and a thread that checkpoints the WAL.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from appliance.errors import StorageUnavailableError
from appliance.storage.sql.migrate import migrate
from appliance.storage.sql.store import Readers, SqlStorage
from appliance.storage.sql.writes import Writer
from appliance.storage.sqlite.connection import ServerLock, connect, open_connection

log = logging.getLogger(__name__)
_CHECKPOINT_INTERVAL_S = 0.5


class SqliteStorage(SqlStorage):
    """The `Storage` interface on one SQLite file."""

    _checkpointer: threading.Thread | None = None

    _lock: ServerLock | None = None

    @classmethod
    async def open(cls, path: Path, now_ms: int, *, migrate_schema: bool = True,
                   server: bool = False) -> SqliteStorage:
        """Open (creating and migrating as needed) the database at `path`.

        `server` takes the file's server lock: a second server is refused.

        Raises:
            StorageUnavailableError: the file cannot be opened.
            StorageError: the schema cannot be migrated.
        """
        loop = asyncio.get_running_loop()
        wpool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")

        def setup() -> Writer:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageUnavailableError(
                    f"cannot create data directory {path.parent}: {exc.strerror}") from None
            if lock is not None:
                lock.acquire()
            conn = connect(path)
            try:
                if migrate_schema:
                    migrate(conn, now_ms)
            except BaseException:
                conn.close()
                raise
            return Writer(conn)

        lock = ServerLock(path) if server else None
        try:
            writer = await loop.run_in_executor(wpool, setup)
        except BaseException:
            wpool.shutdown()
            if lock is not None:
                lock.release()
            raise
        store = cls(writer, wpool, Readers(partial(connect, path), 1, "sqlite-reader"))
        store._lock = lock
        store.start_checkpoints(path, writer)
        return store

    def start_checkpoints(self, path: Path, writer: Writer) -> None:
        """Checkpoint the WAL from a thread of its own.

        With the writer's automatic checkpoints, every ~1,000 pages one commit
        would also copy the WAL into the database and fsync it, a latency
        spike on the SENT path; a PASSIVE checkpoint from another connection
        never blocks the writer.
        """
        writer.conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._stop_checkpoints = stop = threading.Event()

        def loop() -> None:
            conn = open_connection(path)
            try:
                while not stop.wait(_CHECKPOINT_INTERVAL_S):
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    except sqlite3.Error as exc:
                        log.warning("WAL checkpoint failed: %s", exc)
            finally:
                conn.close()

        self._checkpointer = threading.Thread(target=loop, name="sqlite-checkpoint", daemon=True)
        self._checkpointer.start()

    async def close(self) -> None:
        """Stop checkpointing, then close both connections."""
        if self._checkpointer is not None:
            self._stop_checkpoints.set()
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.join)
            self._checkpointer = None
        await super().close()
        if self._lock is not None:
            self._lock.release()
