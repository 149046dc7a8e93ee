"""Copying the store out of a running appliance, and loading a copy back.

SQLite: the online backup API (`appliance.storage.snapshot`).  MariaDB:
``mariadb-dump --single-transaction``, a logical dump read inside one
REPEATABLE READ transaction (InnoDB's consistent snapshot: no table locks,
the server keeps committing), loaded back with the ``mariadb`` client.
Chosen over ``mariadb-backup`` because it needs neither access to the
server's data directory (a system server's belongs to ``mysql``) nor the
same server version on the machine restored to, and it loads into whichever
database the new install configured; the cost is a slower restore of very
large stores.

As root, the store is worked on as its owner (`appliance.backup.owner`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import IO, Final

from appliance.backup.owner import Owner, as_owner, login_as
from appliance.config.database import DatabaseLocation
from appliance.dbserver.binaries import mariadb_binary
from appliance.errors import LifecycleError
from appliance.service.database import running
from appliance.storage import snapshot
from appliance.system.host import host_env

#: A dump or load of a large store may take long; a hung one must not hang forever.
CLIENT_TIMEOUT_S: Final = 6 * 3600.0
_STDERR_TAIL: Final = 2000


def dump(location: DatabaseLocation, data_dir: Path, target: Path, owner: Owner,
         timeout_s: float) -> int:
    """Write a consistent copy of the store to `target` (in a directory `owner` may
    write); returns its schema version.

    Raises:
        LifecycleError: the copy failed.  StorageError: the store is unreachable.
    """
    if location.kind == "sqlite":
        assert location.sqlite_path is not None
        with as_owner(owner):
            return snapshot.snapshot_sqlite(location.sqlite_path, target)
    with running(location, data_dir):
        login = login_as(location, owner)
        with as_owner(owner):
            version = snapshot.schema_version(login, timeout_s)
            args = ["--single-transaction", "--quick", "--skip-lock-tables", "--no-tablespaces",
                    "--hex-blob", "--default-character-set=utf8mb4", "--skip-dump-date"]
            _client("mariadb-dump", login, target.parent, [*args, login.database],
                    stdout=target)
    return version


def load(location: DatabaseLocation, dump_file: Path, owner: Owner) -> None:
    """Load a MariaDB dump into `location`'s database (emptied by the caller).

    Runs as `owner` with the lock already held (`restore`).

    Raises:
        LifecycleError: the client failed.
    """
    login = login_as(location, owner)
    with as_owner(owner):
        _client("mariadb", login, dump_file.parent,
                ["--binary-mode", "--default-character-set=utf8mb4",
                 f"--database={login.database}"], stdin=dump_file)


def _client(program: str, location: DatabaseLocation, scratch: Path, args: list[str], *,
            stdout: Path | None = None, stdin: Path | None = None) -> None:
    """Run a MariaDB client program against `location`; the password (if any) goes in
    an option file 0600 in `scratch`, never on the command line (ps shows it)."""
    options = ["--no-defaults"]
    secret: Path | None = None
    if location.password:
        if any(c in location.password for c in "\n\r\0"):
            raise LifecycleError("the database password holds a line break",
                                 step=f"{program}")
        secret = scratch / f".{program}.cnf"
        escaped = location.password.replace("\\", "\\\\").replace('"', '\\"')
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f'[client]\npassword="{escaped}"\n')
        options = [f"--defaults-file={secret}"]
    where = ([f"--socket={location.socket}"] if location.socket
             else [f"--host={location.host}", f"--port={location.port}", "--protocol=tcp"])
    cmd = [str(mariadb_binary(program)), *options, f"--user={location.user}", *where, *args]
    try:
        with contextlib.ExitStack() as stack:
            src: IO[bytes] | int = subprocess.DEVNULL
            out: IO[bytes] | int = subprocess.DEVNULL
            if stdin is not None:
                src = stack.enter_context(stdin.open("rb"))
            if stdout is not None:
                out = stack.enter_context(os.fdopen(os.open(
                    stdout, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb"))
            done = subprocess.run(cmd, stdin=src, stdout=out, stderr=subprocess.PIPE,
                                  env=host_env(), timeout=CLIENT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise LifecycleError(f"no result within {CLIENT_TIMEOUT_S:.0f} s", step=program
                             ) from None
    finally:
        if secret is not None:
            secret.unlink(missing_ok=True)
    if done.returncode != 0:
        raise LifecycleError(done.stderr.decode(errors="replace").strip()[-_STDERR_TAIL:]
                             or f"exit {done.returncode}", step=f"{program} {location.database}")


def current_schema(location: DatabaseLocation, data_dir: Path, owner: Owner,
                   timeout_s: float) -> int:
    """The store's schema version now (an upgrade compares it with its backup's).

    Raises:
        StorageError: unreachable.
    """
    with running(location, data_dir):
        login = login_as(location, owner)
        with as_owner(owner):
            return snapshot.schema_version(login, timeout_s)
