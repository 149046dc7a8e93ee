"""The database answer: embedded SQLite, this machine's MariaDB, the private one, or a URL.

``mariadb`` and ``private`` are what ``tidings db bootstrap`` (``--private``)
does, by the same service code (`appliance.service.database`): the checks
here only make sure it can run (root, the server installed and answering);
the bootstrap itself runs once the operator has confirmed the summary, and
ends with a connection and migrations.  A URL or socket path is connected to
before anything is written.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from appliance.config.database import (
    SQLITE_FILE,
    DatabaseLocation,
    parse_database,
    record_database,
    resolve_database,
)
from appliance.dbserver import binaries
from appliance.dbserver.private import socket_live
from appliance.errors import AnswerError, ApplianceError, ConfigError
from appliance.service import database
from appliance.setup.answers import DATABASE
from appliance.storage import maintenance
from appliance.system import layout

SQLITE: Final = "sqlite"
#: This machine's MariaDB server, bootstrapped (`database.bootstrap_system`).
SYSTEM: Final = "mariadb"
#: A MariaDB server of the appliance's own in the data directory.
PRIVATE: Final = "private"
#: How long the reachability check may wait for a remote database.
CHECK_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class DatabaseChoice:
    """A checked database answer."""

    answer: str
    #: What ``storage.database`` is set to.
    setting: str
    location: DatabaseLocation

    def describe(self) -> str:
        if self.answer == SYSTEM:
            return f"this machine's MariaDB server ({self.setting}), database" \
                   f" {self.location.database!r}, unix_socket login"
        if self.answer == PRIVATE:
            return "a private MariaDB server in the data directory"
        return self.location.describe()


def parse_choice(raw: str, data_dir: Path) -> DatabaseChoice:
    """The answer's form: ``sqlite``, ``mariadb``, ``private``, a socket path or a URL.

    Raises:
        AnswerError: none of them.
    """
    text = raw.strip()
    setting = {SYSTEM: database.SYSTEM_SOCKET}.get(text, text)
    try:
        location = parse_database(setting, data_dir, key=DATABASE.key)
    except ConfigError as exc:
        raise AnswerError(str(exc).removeprefix(f"{DATABASE.key}: "), question=DATABASE.key,
                          fix=f"give {DATABASE.flag} sqlite, mariadb, private or"
                              " mariadb://user:password@host:port/database") from None
    if location.kind == "sqlite" and location.sqlite_path == data_dir / SQLITE_FILE:
        text = setting = SQLITE
    return DatabaseChoice(text, setting, location)


def answer_of(setting: str, data_dir: Path) -> str | None:
    """The answer that stands for an existing ``storage.database`` (and the data
    directory's recorded choice when the setting is empty)."""
    try:
        location = resolve_database(setting, data_dir)
    except ConfigError:
        return setting or None
    if location.private:
        return PRIVATE
    if location.kind == "sqlite":
        return SQLITE if location.sqlite_path == data_dir / SQLITE_FILE else location.url()
    if location.socket == database.SYSTEM_SOCKET and not location.password:
        return SYSTEM
    return setting or location.url()


def check_usable(choice: DatabaseChoice, data_dir: Path) -> None:
    """Refuse a database the apply step could not use; nothing is created.

    Raises:
        AnswerError: naming ``database``.
    """
    fix = f"or choose another with {DATABASE.flag}"
    if choice.answer == SQLITE:
        _check_writable(data_dir)
        return
    if choice.answer in (SYSTEM, PRIVATE):
        if not binaries.server_installed():
            raise AnswerError("MariaDB is not installed", question=DATABASE.key,
                              fix=f"apt-get install {binaries.PACKAGE}, {fix}")
        if choice.answer == SYSTEM:
            if os.geteuid() != 0:
                raise AnswerError("setting up this machine's MariaDB needs root (its"
                                  " administrator logs in by unix_socket)",
                                  question=DATABASE.key, fix=f"run sudo tidings setup, {fix}")
            if not socket_live(Path(database.SYSTEM_SOCKET)):
                raise AnswerError(f"no MariaDB server answers on {database.SYSTEM_SOCKET}",
                                  question=DATABASE.key,
                                  fix=f"start it (systemctl start mariadb), {fix}")
        else:
            _check_writable(data_dir)
        return
    try:
        with database.running(choice.location, data_dir):
            maintenance.status(choice.location, CHECK_TIMEOUT_S)
    except ApplianceError as exc:
        raise AnswerError(f"cannot reach {choice.location.describe()}: {exc}",
                          question=DATABASE.key,
                          fix=f"check the server, the account and the URL, {fix}") from None


def _check_writable(data_dir: Path) -> None:
    existing = data_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise AnswerError(f"the data directory {data_dir} cannot be written ({existing})",
                          question=DATABASE.key,
                          fix="run setup as root, or give --data-dir a writable directory")


def service_user() -> str | None:
    """Who the service runs as: the installer's system user when it exists, else
    (tests, a user's own install) whoever runs setup (None)."""
    try:
        pwd.getpwnam(layout.SERVICE_USER)
    except KeyError:
        return None
    return layout.SERVICE_USER


def prepare(choice: DatabaseChoice, data_dir: Path, timeout_s: float, now_ms: int
            ) -> list[str]:
    """Make the chosen database ready and record it in the data directory; say what was done.

    MariaDB must be installed already (`check_usable` refused otherwise): the
    wizard does not install packages.

    Raises:
        DbServerError, StorageError, UsageError: the bootstrap failed (nothing of
            the configuration is written then).
    """
    user = service_user()
    if choice.answer in (SYSTEM, PRIVATE):
        if choice.answer == SYSTEM:
            result = database.bootstrap_system(
                data_dir, database=choice.location.database, service_user=user,
                timeout_s=timeout_s, now_ms=now_ms)
        else:
            result = database.bootstrap_private(
                data_dir, database=choice.location.database, service_user=user,
                timeout_s=timeout_s, now_ms=now_ms)
        done = [f"MariaDB {result.server_version}: database {result.location.database!r}"
                f" {'created' if result.created_database else 'exists'}, account"
                f" {result.location.user!r} (unix_socket, no password)"
                f" {'created' if result.created_user else 'exists'}"]
        done += [f"warning: {w}" for w in result.warnings]
        return done
    record_database(choice.location, data_dir)
    return [f"database: {choice.describe()}"]
