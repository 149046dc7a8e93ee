"""The embedded SQLite backend."""

from __future__ import annotations

from appliance.storage.sqlite.store import SqliteStorage

__all__ = ["SqliteStorage"]
