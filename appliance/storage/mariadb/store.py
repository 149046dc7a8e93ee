"""`MariaDBStorage`: the production backend (SPEC M14).

The shared SQL code (`appliance.storage.sql`) on a MariaDB database: one
writer thread with its own connection (group commit, exactly as on SQLite:
many messages per transaction, SENT only after COMMIT returned) and a pool
of reader threads, each with a connection.  Every call runs off the event
loop and is bounded by ``storage.timeout_s``.  When the database is down,
calls fail with `StorageUnavailableError` (the engine answers FAILED, never
SENT) and the next call connects again.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from appliance.config.database import DatabaseLocation
from appliance.storage.mariadb.connection import MariaConnection
from appliance.storage.mariadb.trimmer import ReceiptTrimmer
from appliance.storage.sql.migrate import migrate
from appliance.storage.sql.store import Readers, SqlStorage
from appliance.storage.sql.writes import Writer

#: Reader threads: HELLO lookups and queue reads wait on the network, so a
#: few run at once (each holds a connection).
READERS = 4
#: Migrations may rebuild large tables: their calls get a longer bound.
MIGRATION_TIMEOUT_S = 3600.0


class MariaDBStorage(SqlStorage):
    """The `Storage` interface on one MariaDB database."""

    _trimmer: ReceiptTrimmer | None = None

    @classmethod
    async def open(cls, location: DatabaseLocation, timeout_s: float, now_ms: int, *,
                   migrate_schema: bool = True, server: bool = False) -> MariaDBStorage:
        """Connect to `location`, migrating its schema first unless told not to.

        `server` makes the writer hold the database's server lock: a second
        server on the same database is refused.

        Raises:
            StorageUnavailableError: the database cannot be reached.
            StorageError: the schema cannot be migrated, or another server
                holds the lock.
        """
        loop = asyncio.get_running_loop()
        wpool = ThreadPoolExecutor(1, thread_name_prefix="mariadb-writer")

        def setup() -> Writer:
            if migrate_schema:
                conn = MariaConnection(location, MIGRATION_TIMEOUT_S)
                try:
                    migrate(conn, now_ms)
                finally:
                    conn.close()
            writer_conn = MariaConnection(location, timeout_s, autocommit=False,
                                          server_lock=server, pipelined=True)
            writer = Writer(writer_conn)
            try:
                writer_conn.execute("SELECT 1").fetchall()  # connect (and lock) now
                writer_conn.commit()
            except writer_conn.errors as exc:
                raise writer_conn.translate(exc) from None
            return writer

        try:
            writer = await loop.run_in_executor(wpool, setup)
        except BaseException:
            wpool.shutdown()
            raise
        readers = Readers(partial(MariaConnection, location, timeout_s), READERS,
                          "mariadb-reader")
        store = cls(writer, wpool, readers)
        store._trimmer = ReceiptTrimmer(location, timeout_s)
        writer.trimmer = store._trimmer.submit
        return store

    async def close(self) -> None:
        """Close the writer and readers, then the receipt trimmer."""
        await super().close()
        if self._trimmer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._trimmer.close)
