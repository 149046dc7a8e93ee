"""What waits in the queues: per user and per app, for the inbox quotas (SPEC M13).

A user's usage is its delivery rows (one per device that waits for a message)
and their payload bytes; an app's is the payload bytes of its users' delivery
rows.  Nothing is stored for it: the writer thread counts from the tables the
first time it needs a figure, then keeps the figure up to date as it inserts
and deletes delivery rows.  So the counts are right after a restart by
construction, the hot path pays a dict lookup per message and no extra row
writes, and a count that went wrong (a lost connection that committed after
all, another process deleting a user) heals when it is read again:

* a user's figure is dropped with the writer's other caches (after a failed
  transaction, another process's commit, or an administrative change) and
  counted again, at most a quota's worth of rows;
* the apps' figures need a scan of every delivery row, so they are dropped
  only after a failed transaction, when a user is deleted, and now and then
  by the sweep (another process may have deleted users meanwhile).

Only figures already loaded are updated: one loaded later is counted from
the tables inside the same transaction, so it already sees this
transaction's rows.
"""

from __future__ import annotations

from appliance.storage.models import QueueQuota
from appliance.storage.sql.bulk import CHUNK
from appliance.storage.sql.dialect import Connection

_USER = ("SELECT count(*), sum(length(m.payload)) FROM deliveries d JOIN messages m"
         " ON m.seq = d.seq WHERE d.device_id IN (SELECT id FROM devices WHERE user_id = ?)")
_USERS = ("SELECT v.user_id, count(*), sum(length(m.payload)) FROM deliveries d"
          " JOIN devices v ON v.id = d.device_id JOIN messages m ON m.seq = d.seq"
          " WHERE v.user_id IN ({}) GROUP BY v.user_id")
_APPS = ("SELECT u.app_id, sum(length(m.payload)) FROM deliveries d"
         " JOIN devices v ON v.id = d.device_id JOIN users u ON u.id = v.user_id"
         " JOIN messages m ON m.seq = d.seq GROUP BY u.app_id")


class QueueUsage:
    """Queued delivery rows and bytes per user, queued bytes per app."""

    __slots__ = ("_apps", "_users", "conn")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._users: dict[int, list[int]] = {}
        self._apps: dict[int, int] | None = None

    def __len__(self) -> int:
        """Users whose counts are cached."""
        return len(self._users)

    def forget_users(self) -> None:
        """Count every user again on next use."""
        self._users = {}

    def forget_apps(self) -> None:
        """Count every app again on next use (a scan of the delivery rows)."""
        self._apps = None

    def count_user(self, user_id: int) -> tuple[int, int]:
        """(delivery rows, payload bytes) waiting for `user_id`, from the tables."""
        rows, size = self.conn.execute(_USER, (user_id,)).fetchone()
        return int(rows), int(size or 0)  # MariaDB's sum() is a Decimal

    def user(self, user_id: int) -> list[int]:
        """[delivery rows, payload bytes] of `user_id`; loaded once, then kept."""
        usage = self._users.get(user_id)
        if usage is None:
            usage = self._users[user_id] = list(self.count_user(user_id))
        return usage

    def prefetch(self, users: list[int]) -> None:
        """Load the users not loaded yet, `CHUNK` per statement (a large group's members)."""
        missing = [u for u in users if u not in self._users]
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start:start + CHUNK]
            for user in chunk:
                self._users[user] = [0, 0]  # no delivery row: no line in the result
            for user, rows, size in self.conn.execute(
                    _USERS.format(",".join("?" * len(chunk))), chunk).fetchall():
                self._users[int(user)] = [int(rows), int(size or 0)]

    def app(self, app_id: int) -> int:
        """Payload bytes queued for the users of `app_id`."""
        apps = self._apps
        if apps is None:
            apps = self._apps = {int(app): int(size or 0)
                                 for app, size in self.conn.execute(_APPS).fetchall()}
        return apps.get(app_id, 0)

    def inbox_full(self, user_id: int, copies: int, size: int, quota: QueueQuota) -> bool:
        """Whether `copies` more rows of `size` bytes would put the user over its quota."""
        usage = self.user(user_id)
        return (usage[0] + copies > quota.max_messages
                or usage[1] + copies * size > quota.max_bytes)

    def app_full(self, app_id: int, size: int, quota: QueueQuota) -> bool:
        """Whether `size` more bytes would put the app over its quota."""
        return self.app(app_id) + size > quota.max_app_bytes

    def add(self, user_id: int, app_id: int, rows: int, size: int) -> None:
        """`rows` delivery rows of `size` bytes in all were inserted (or, negative, deleted)."""
        usage = self._users.get(user_id)
        if usage is not None:
            usage[0] += rows
            usage[1] += size
        apps = self._apps
        if apps is not None:
            apps[app_id] = apps.get(app_id, 0) + size

    def set_user(self, user_id: int, app_id: int, before: tuple[int, int],
                 after: tuple[int, int]) -> None:
        """The user's rows were changed wholesale (device registration): take the new count."""
        self._users[user_id] = list(after)
        apps = self._apps
        if apps is not None:
            apps[app_id] = apps.get(app_id, 0) + after[1] - before[1]
