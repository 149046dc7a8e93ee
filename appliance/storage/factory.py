"""`open_storage`: the only place that picks a backend."""

from __future__ import annotations

from pathlib import Path

from appliance.storage.interface import Storage

#: File name of the embedded database inside the data directory.
SQLITE_FILE = "tidings.sqlite3"


async def open_storage(data_dir: Path, now_ms: int) -> Storage:
    """Open the configured store (for now: the embedded SQLite file).

    Raises:
        StorageUnavailableError: the database cannot be opened.
        StorageError: its schema cannot be migrated.
    """
    from appliance.storage.sqlite import SqliteStorage

    return await SqliteStorage.open(data_dir / SQLITE_FILE, now_ms)
