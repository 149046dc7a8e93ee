"""The one setting that chooses the store: ``[storage] database`` (SPEC M14).

Accepted forms:

* ``""`` (the default): whatever ``tidings db bootstrap`` / ``db copy``
  recorded in ``<data_dir>/database``, else the embedded SQLite file;
* ``sqlite`` or ``sqlite:///absolute/path.sqlite3``;
* ``private``: the private MariaDB server in ``<data_dir>/mariadb``;
* an absolute path to a MariaDB socket, e.g. ``/run/mysqld/mysqld.sock``
  (database ``tidings``, user = the OS user, unix_socket authentication);
* ``mariadb://[user[:password]@][host[:port]]/database[?socket=PATH]``.

A wrong value is a `ConfigError` naming the key (or the file it came from).
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from appliance.errors import ConfigError

#: Inside the data directory: the embedded database, the recorded choice,
#: the private MariaDB server.
SQLITE_FILE = "tidings.sqlite3"
CHOICE_FILE = "database"
PRIVATE_DIR = "mariadb"
DEFAULT_DATABASE = "tidings"
KEY = "storage.database"
_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
# sun_path holds 108 bytes with the terminating NUL.
_MAX_SOCKET_PATH = 107


@dataclass(frozen=True, slots=True)
class DatabaseLocation:
    """Where the store is.  `kind` is ``sqlite`` or ``mariadb``."""

    kind: str
    sqlite_path: Path | None = None
    socket: str = ""
    host: str = ""
    port: int = 3306
    user: str = ""
    password: str = ""
    database: str = DEFAULT_DATABASE
    #: The private server in the data directory that the appliance runs.
    private: bool = False

    def describe(self) -> str:
        """For operators: where the data is, never the password."""
        if self.kind == "sqlite":
            return f"SQLite {self.sqlite_path}"
        where = f"socket {self.socket}" if self.socket else f"{self.host}:{self.port}"
        private = "private " if self.private else ""
        return f"{private}MariaDB database {self.database!r} as {self.user!r} on {where}"

    def url(self) -> str:
        """The setting that names this location (what ``db bootstrap`` records)."""
        if self.kind == "sqlite":
            return f"sqlite://{self.sqlite_path}"
        if self.private:
            return "private"
        auth = self.user + (":" + self.password if self.password else "")
        host = "" if self.socket else f"{self.host}:{self.port}"
        query = f"?socket={self.socket}" if self.socket else ""
        return f"mariadb://{auth}@{host}/{self.database}{query}"


def private_socket(data_dir: Path) -> Path:
    """The socket of the private MariaDB server."""
    return data_dir / PRIVATE_DIR / "mysqld.sock"


def parse_database(value: str, data_dir: Path, *, key: str = KEY) -> DatabaseLocation:
    """Turn a ``storage.database`` value into a location.

    Raises:
        ConfigError: the value is not one of the accepted forms (names `key`).
    """
    text = value.strip()
    if text in ("", "sqlite"):
        return DatabaseLocation("sqlite", sqlite_path=data_dir / SQLITE_FILE)
    if text == "private":
        socket = private_socket(data_dir)
        _check_socket(str(socket), key)
        return DatabaseLocation("mariadb", socket=str(socket), user=_os_user(),
                                private=True)
    if text.startswith("/"):
        _check_socket(text, key)
        return DatabaseLocation("mariadb", socket=text, user=_os_user())
    parts = urlsplit(text)
    if parts.scheme == "sqlite":
        path = unquote(parts.netloc + parts.path)
        if not path.startswith("/"):
            raise ConfigError("a sqlite URL needs an absolute path: sqlite:///var/lib/x.sqlite3",
                              key_path=key)
        return DatabaseLocation("sqlite", sqlite_path=Path(path))
    if parts.scheme != "mariadb":
        raise ConfigError(f"must be 'sqlite', 'private', a MariaDB socket path or a"
                          f" mariadb:// URL, got {value!r}", key_path=key)
    return _mariadb_url(parts, value, key)


def _mariadb_url(parts: SplitResult, value: str, key: str) -> DatabaseLocation:
    database = unquote(parts.path.lstrip("/")) or DEFAULT_DATABASE
    if not _NAME.match(database):
        raise ConfigError(f"database name must be 1-64 letters, digits or '_', got {database!r}",
                          key_path=key)
    try:
        query = parse_qs(parts.query, strict_parsing=bool(parts.query))
        port = parts.port or 3306
    except ValueError as exc:
        raise ConfigError(f"not a valid mariadb:// URL ({exc}): {value!r}", key_path=key) from None
    unknown = set(query) - {"socket"}
    if unknown:
        raise ConfigError(f"unknown URL parameter {sorted(unknown)[0]!r} (known: socket)",
                          key_path=key)
    socket = query.get("socket", [""])[-1]
    host = parts.hostname or ""
    if socket:
        _check_socket(socket, key)
    elif not host or host == "localhost":
        # libmariadb reads "localhost" as "the default socket" anyway.
        socket = "/run/mysqld/mysqld.sock"
    return DatabaseLocation("mariadb", socket=socket, host=host, port=port,
                            user=unquote(parts.username or "") or _os_user(),
                            password=unquote(parts.password or ""), database=database)


def _check_socket(path: str, key: str) -> None:
    if not path.startswith("/"):
        raise ConfigError(f"socket path must be absolute, got {path!r}", key_path=key)
    if len(path.encode()) > _MAX_SOCKET_PATH:
        raise ConfigError(f"socket path is longer than {_MAX_SOCKET_PATH} bytes: {path}",
                          key_path=key)


def _os_user() -> str:
    # unix_socket authentication maps the OS user to the account of that name.
    return getpass.getuser()


def resolve_database(setting: str, data_dir: Path) -> DatabaseLocation:
    """The configured location, or the one recorded in the data directory.

    Raises:
        ConfigError: the setting, or the recorded file, holds a wrong value.
    """
    if setting.strip():
        return parse_database(setting, data_dir)
    recorded = data_dir / CHOICE_FILE
    try:
        text = recorded.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return parse_database("", data_dir)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", key_path=str(recorded)) from None
    return parse_database(text, data_dir, key=str(recorded))


def record_database(location: DatabaseLocation, data_dir: Path) -> Path:
    """Remember `location` in the data directory for later runs (written atomically)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / CHOICE_FILE
    tmp = target.with_suffix(".tmp")
    default_sqlite = location.kind == "sqlite" and location.sqlite_path == data_dir / SQLITE_FILE
    text = "sqlite" if default_sqlite else location.url()
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.chmod(0o600)  # a remote URL may carry a password
    tmp.replace(target)
    return target
