"""The `backend` fixture: every storage contract test runs on SQLite and on a real MariaDB.

Each test gets a database of its own (a file in its tmp_path, or a database
on the session's MariaDB server; under CI=true a missing MariaDB fails the
run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from appliance.storage.interface import Storage
from appliance.storage.mariadb import MariaDBStorage
from appliance.storage.sqlite import SqliteStorage

#: When the schema is migrated (its applied_ms).
MIGRATED_MS = 1_700_000_000_000


class Opener:
    """Opens the test's store, the same database each time (tests may reopen it).

    `server=False` opens it as another process would (the CLI, or a second
    node: no server lock), so that several can be open at once.
    """

    def __init__(self, name: str, open_store: Callable[[bool], Awaitable[Storage]]) -> None:
        self.name = name
        self._open = open_store

    def __call__(self, *, server: bool = True) -> Awaitable[Storage]:
        return self._open(server)


def run(backend: Opener, fn: Callable[[Storage], Awaitable[None]]) -> None:
    """Open the test's store, run `fn` on it, close it."""
    async def main() -> None:
        store = await backend()
        try:
            await fn(store)
        finally:
            await store.close()
    asyncio.run(main())


@pytest.fixture(params=["sqlite", "mariadb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Runs a test once on each backend (SPEC M14)."""
    if request.param == "sqlite":
        path = tmp_path / "contract.sqlite3"
        return Opener("sqlite", lambda server: SqliteStorage.open(path, MIGRATED_MS,
                                                                  server=server))
    location = request.getfixturevalue("mariadb").database("contract")
    return Opener("mariadb", lambda server: MariaDBStorage.open(location, 10.0, MIGRATED_MS,
                                                                server=server))
