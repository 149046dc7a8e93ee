"""Database administration for ``tidings db``: bootstrap, status, migrate, copy.

The steps an operator would otherwise do by hand, in the order that keeps
them safe: install the server if allowed, create the database and a
unix_socket account (no password anywhere), migrate, and only then record
the new location in the data directory, so that a half-done bootstrap never
points the server at a database that is not ready.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from appliance.config.database import (
    CHOICE_FILE,
    DEFAULT_DATABASE,
    DatabaseLocation,
    parse_database,
    record_database,
    resolve_database,
)
from appliance.config.model import StorageConfig
from appliance.dbserver import binaries
from appliance.dbserver.private import (
    PrivateLayout,
    PrivateServer,
    initialise,
    os_user,
    socket_live,
)
from appliance.errors import DbServerError, DbServerMissingError, UsageError
from appliance.storage import maintenance
from appliance.storage.models import SchemaStatus

SYSTEM_SOCKET = "/run/mysqld/mysqld.sock"


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    """What `bootstrap_system` / `bootstrap_private` did."""

    location: DatabaseLocation
    server_version: str
    created_database: bool
    created_user: bool
    initialised_server: bool
    installed_server: bool
    migrated: tuple[int, ...]
    recorded_in: Path
    warnings: tuple[str, ...]


def ensure_server_installed(confirm: Callable[[], bool]) -> bool:
    """Install mariadb-server when it is missing and `confirm()` agrees.

    Returns whether it installed anything.

    Raises:
        DbServerMissingError: missing and the operator declined.
        DbServerError: the install failed.
    """
    if binaries.server_installed():
        return False
    if not confirm():
        raise DbServerMissingError(
            f"MariaDB is not installed; install {binaries.PACKAGE} (apt-get install"
            f" {binaries.PACKAGE}) or pass --install-server", package=binaries.PACKAGE)
    binaries.install_server()
    return True


def _service_account(name: str | None) -> pwd.struct_passwd:
    user = name or os_user()
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"no OS user {user!r}: create it first (useradd --system {user})"
                         ) from None


def bootstrap_system(data_dir: Path, *, socket: str = SYSTEM_SOCKET,
                     database: str = DEFAULT_DATABASE, service_user: str | None = None,
                     timeout_s: float = 10.0, now_ms: int,
                     confirm_install: Callable[[], bool] = lambda: False) -> BootstrapResult:
    """Prepare a database on the machine's MariaDB server and record it.

    Runs as an administrator the server knows by unix_socket (root).

    Raises:
        DbServerError: the server is missing (and not installed) or not running.
        UsageError: a bad name, or the service user does not exist.
        StorageError: the server refused a step.
    """
    account = _service_account(service_user)
    installed = ensure_server_installed(confirm_install)
    if not socket_live(Path(socket)):
        raise DbServerError(f"no MariaDB server answers on {socket}; start it"
                            " (systemctl start mariadb) or name its socket with --socket")
    admin = parse_database(socket, data_dir, key="--socket")
    admin = replace(admin, database=database)
    report = maintenance.bootstrap(admin, database, account.pw_name, timeout_s)
    migrated = maintenance.migrate(admin, timeout_s, now_ms)  # as the administrator
    location = replace(admin, user=account.pw_name)
    recorded = _record(location, data_dir, account)
    return BootstrapResult(location, report.server_version, report.created_database,
                           report.created_user, False, installed, tuple(migrated), recorded,
                           report.warnings)


def bootstrap_private(data_dir: Path, *, database: str = DEFAULT_DATABASE,
                      service_user: str | None = None, timeout_s: float = 10.0, now_ms: int,
                      confirm_install: Callable[[], bool] = lambda: False) -> BootstrapResult:
    """Initialise the private server in the data directory, prepare its database, record it.

    Raises:
        DbServerError: mariadb-server is missing (and not installed), or
            the server cannot be initialised or started.
        StorageError: the server refused a step.
    """
    account = _service_account(service_user)
    installed = ensure_server_installed(confirm_install)
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and account.pw_uid != 0:
        # The data directory is the service's: its server must reach its files.
        os.chown(data_dir, account.pw_uid, account.pw_gid)
    layout = PrivateLayout(data_dir, account.pw_name)
    created = initialise(layout)
    server = None
    if not socket_live(layout.socket):
        server = PrivateServer(layout)
        server.start()
    try:
        location = replace(parse_database("private", data_dir), user=os_user(),
                           database=database)
        report = maintenance.bootstrap(location, database, account.pw_name, timeout_s)
        migrated = maintenance.migrate(location, timeout_s, now_ms)
    finally:
        if server is not None:
            server.stop()
    location = replace(location, user=account.pw_name)
    recorded = _record(location, data_dir, account)
    return BootstrapResult(location, report.server_version, report.created_database,
                           report.created_user, created, installed, tuple(migrated), recorded,
                           report.warnings)


def _record(location: DatabaseLocation, data_dir: Path, account: pwd.struct_passwd) -> Path:
    path = record_database(location, data_dir)
    if os.geteuid() == 0 and account.pw_uid != 0:
        # The service reads it as its own user.
        os.chown(path, account.pw_uid, account.pw_gid)
        os.chown(data_dir, account.pw_uid, account.pw_gid)
    return path


@contextlib.contextmanager
def running(location: DatabaseLocation, data_dir: Path) -> Iterator[PrivateServer | None]:
    """Make sure the private server of `location` runs while the block does.

    A server already answering (systemd's unit, a running ``tidings serve``)
    is used as it is; otherwise one is started now and stopped afterwards.
    Other locations need nothing.
    """
    if not location.private or socket_live(Path(location.socket)):
        yield None
        return
    server = PrivateServer(PrivateLayout(data_dir))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True, slots=True)
class DatabaseStatus:
    """`tidings db status`: where the data is and its schema."""

    location: DatabaseLocation
    chosen_by: str
    schema: SchemaStatus
    warnings: tuple[str, ...]


def status(config: StorageConfig) -> DatabaseStatus:
    """Describe the configured database without changing it.

    Raises:
        ConfigError: a wrong setting.  StorageUnavailableError: unreachable.
    """
    location = resolve_database(config.database, config.data_dir)
    if config.database.strip():
        chosen = "storage.database setting"
    elif (config.data_dir / CHOICE_FILE).exists():
        chosen = str(config.data_dir / CHOICE_FILE)
    else:
        chosen = "default"
    warnings: tuple[str, ...] = ()
    with running(location, config.data_dir):
        schema = maintenance.status(location, config.timeout_s)
        if location.kind == "mariadb":
            warnings = maintenance.durability_warnings(location, config.timeout_s)
    return DatabaseStatus(location, chosen, schema, warnings)


def migrate(config: StorageConfig, now_ms: int) -> list[int]:
    """Apply pending migrations to the configured database."""
    location = resolve_database(config.database, config.data_dir)
    with running(location, config.data_dir):
        return maintenance.migrate(location, config.timeout_s, now_ms)


def copy(config: StorageConfig, target: str, now_ms: int, *, switch: bool = True,
         progress: Callable[[str, int], None] = lambda table, rows: None
         ) -> tuple[DatabaseLocation, dict[str, int]]:
    """Copy the configured database into `target` (a ``storage.database`` value).

    With `switch`, the data directory then records `target`, so the next
    ``tidings serve`` runs on it.

    Raises:
        ConfigError: `target` is not a valid database setting.
        StorageError: a server is running, the target is not empty, or the copy failed.
    """
    source = resolve_database(config.database, config.data_dir)
    destination = parse_database(target, config.data_dir, key="--to")
    with running(source, config.data_dir), running(destination, config.data_dir):
        counts = maintenance.copy(source, destination, config.timeout_s, now_ms, progress)
    if switch:
        record_database(destination, config.data_dir)
    return destination, counts
