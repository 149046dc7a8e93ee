"""A real MariaDB server for the tests: the appliance's own private server code.

One server per test session (``mariadb-install-db`` into a temporary
directory, socket only, started by `PrivateServer`, readiness by its
``READY=1``); every test gets a database of its own, so tests never see each
other's rows or server locks.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

from appliance.config.database import DatabaseLocation, parse_database, record_database
from appliance.dbserver import binaries
from appliance.dbserver.private import PrivateLayout, PrivateServer, initialise
from appliance.storage.mariadb.connection import open_raw
from tests.support.components import missing

_names = itertools.count(1)


class MariaDBServer:
    """A private mariadbd in ``root/mariadb``; `database()` hands out fresh databases."""

    def __init__(self, root: Path) -> None:
        if not binaries.server_installed():
            missing("MariaDB is not installed (apt-get install mariadb-server):"
                    " the MariaDB tests need a real server")
        self.root = root
        self.layout = PrivateLayout(root)
        self.server = PrivateServer(self.layout)

    def start(self) -> None:
        initialise(self.layout)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    @property
    def admin(self) -> DatabaseLocation:
        """The administrator: the OS user, by unix_socket, no database."""
        return parse_database("private", self.root)

    def database(self, prefix: str = "t") -> DatabaseLocation:
        """A new, empty database on this server."""
        name = f"{prefix}_{next(_names)}"
        location = replace(self.admin, database=name, private=False)
        conn = open_raw(location, 10, database=False)
        try:
            conn.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
                                  " COLLATE utf8mb4_bin")
        finally:
            conn.close()
        return location

    def use_in(self, data_dir: Path, prefix: str = "t") -> DatabaseLocation:
        """Point a data directory at a new database (as ``tidings db bootstrap`` records it)."""
        location = self.database(prefix)
        record_database(location, data_dir)
        return location
