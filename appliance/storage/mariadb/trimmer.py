"""Confirmed receipts removed on a connection of their own (MariaDB).

Every reliable message leaves a receipt row that goes once the sender's
devices have confirmed it: one InnoDB row delete per message, ~10 us of the
server thread that runs the writer's connection, whose work bounds the
reliable throughput (measured: about a fifth of it).  The deletion needs no
ordering with the group commit (it removes only rows at or below cursors
already committed, and new receipts always sort above them), so a second
connection does it in parallel, one statement for every user that confirmed
something since its last run.  SQLite admits one writer at a time: there the
writer trims in its own transaction.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from appliance.config.database import DatabaseLocation
from appliance.storage.mariadb.connection import MariaConnection
from appliance.storage.sql.receipts import trim_receipts

log = logging.getLogger(__name__)


class ReceiptTrimmer:
    """`submit(users)` from the writer thread; trims run one at a time, coalesced."""

    def __init__(self, location: DatabaseLocation, timeout_s: float) -> None:
        self._conn = MariaConnection(location, timeout_s)  # autocommit: one statement each
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mariadb-trimmer")
        self._lock = threading.Lock()
        self._users: set[int] = set()
        self._scheduled = False

    def submit(self, users: set[int]) -> None:
        """Trim the receipts of `users` soon (returns at once)."""
        with self._lock:
            self._users |= users
            if self._scheduled:
                return
            self._scheduled = True
        self._pool.submit(self._run)

    def _run(self) -> None:
        with self._lock:
            users, self._users = sorted(self._users), set()
            self._scheduled = False
        try:
            trim_receipts(self._conn, users)
        except self._conn.errors as exc:
            # Left for the next confirmation of these users (or a later trim);
            # a receipt kept too long is never sent again (cursors say so).
            log.warning("cannot remove confirmed receipts: %s", self._conn.translate(exc))

    def close(self) -> None:
        """Finish what was submitted, then close the connection."""
        self._pool.shutdown()
        self._conn.close()
