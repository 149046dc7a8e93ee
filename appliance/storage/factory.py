"""`open_storage`: the only place that picks a backend."""

from __future__ import annotations

from appliance.config.database import DatabaseLocation, resolve_database
from appliance.config.model import StorageConfig
from appliance.storage.interface import Storage


async def open_storage(config: StorageConfig, now_ms: int, *, migrate: bool = True,
                       server: bool = False) -> Storage:
    """Open the configured store (`appliance.config.database` says which).

    `server`: this process runs the delivery engine on it (MariaDB then
    refuses a second server on the same database).

    Raises:
        ConfigError: the database setting is wrong.
        StorageUnavailableError: the database cannot be opened or reached.
        StorageError: its schema cannot be migrated.
    """
    location = resolve_database(config.database, config.data_dir)
    return await open_location(location, config.timeout_s, now_ms, migrate=migrate,
                               server=server)


async def open_location(location: DatabaseLocation, timeout_s: float, now_ms: int, *,
                        migrate: bool = True, server: bool = False) -> Storage:
    """Open the store at `location` (see `open_storage`)."""
    if location.kind == "sqlite":
        from appliance.storage.sqlite import SqliteStorage

        assert location.sqlite_path is not None
        return await SqliteStorage.open(location.sqlite_path, now_ms, migrate_schema=migrate,
                                        server=server)
    # Imported only when chosen: the SQLite default never loads the driver.
    from appliance.storage.mariadb import MariaDBStorage

    return await MariaDBStorage.open(location, timeout_s, now_ms, migrate_schema=migrate,
                                     server=server)
