"""The private MariaDB server in the data directory (SPEC M14).

``tidings db bootstrap --private`` initialises it (`initialise`):
``mariadb-install-db`` into ``<data_dir>/mariadb/data``, socket only, the
administrative account authenticated by unix_socket as the service's OS user:
no password anywhere.  In production systemd runs it
(``systemd/tidings-mariadb.service`` calls ``tidings db run-private``, which
becomes ``mariadbd``); under a bare ``tidings serve`` the appliance starts it
as a child and restarts it if it dies (`PrivateServer`).

Readiness is mariadbd's own ``READY=1`` (sd_notify), read from a datagram
socket we hand it in ``NOTIFY_SOCKET``: no polling, no sleeps.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from appliance.config.database import private_socket
from appliance.dbserver.binaries import mariadb_binary
from appliance.errors import DbServerError
from appliance.system.host import host_env

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 120.0
_STOP_TIMEOUT_S = 120.0
_RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)


def os_user() -> str:
    """The name of the OS user this process runs as."""
    return pwd.getpwuid(os.geteuid()).pw_name


def _owner(path: Path) -> str | None:
    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (FileNotFoundError, KeyError):
        return None


class PrivateLayout:
    """Where the private server keeps its files, under ``<data_dir>/mariadb``."""

    def __init__(self, data_dir: Path, user: str | None = None) -> None:
        self.socket = private_socket(data_dir)
        self.root = self.socket.parent
        #: The OS user the server runs as and whose unix_socket account
        #: administers it: once initialised, the owner of its files (root
        #: running a CLI command must not start it as root: files it then
        #: created would be root's, out of the service's reach).
        self.user = user or _owner(self.root) or os_user()
        self.datadir = self.root / "data"
        self.pid_file = self.root / "mysqld.pid"
        self.error_log = self.root / "mariadb.log"

    @property
    def initialised(self) -> bool:
        """Whether ``mariadb-install-db`` has run here."""
        return (self.datadir / "mysql").is_dir()

    def server_args(self) -> list[str]:
        """The mariadbd command line: socket only, durable commits."""
        args = [str(mariadb_binary("mariadbd")), "--no-defaults",
                f"--datadir={self.datadir}", f"--socket={self.socket}",
                f"--pid-file={self.pid_file}", f"--log-error={self.error_log}",
                "--skip-networking", "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_bin",
                # SPEC M14: COMMIT returns after the redo log is on disk.
                "--innodb-flush-log-at-trx-commit=1", "--sync-binlog=1",
                "--max-connections=200"]
        if os.geteuid() == 0:
            # Root drops to the service user (mariadbd refuses to run as root
            # unless told so explicitly).
            args.append(f"--user={self.user}")
        return args


def initialise(layout: PrivateLayout) -> bool:
    """Create the private server's data directory; False if it already existed.

    Raises:
        DbServerError: mariadb-install-db is missing or failed.
    """
    if layout.initialised:
        return False
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.root.chmod(0o700)
    user = layout.user
    if os.geteuid() == 0 and user != "root":
        entry = pwd.getpwnam(user)
        os.chown(layout.root, entry.pw_uid, entry.pw_gid)
    cmd = [str(mariadb_binary("mariadb-install-db")), "--no-defaults", f"--user={user}",
           f"--datadir={layout.datadir}", "--auth-root-authentication-method=socket",
           f"--auth-root-socket-user={user}", "--skip-test-db",
           "--skip-name-resolve"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=host_env())
    if done.returncode != 0:
        raise DbServerError(f"mariadb-install-db failed ({done.returncode}):"
                            f" {(done.stderr or done.stdout).strip()[-2000:]}")
    if os.geteuid() == 0 and user != "root":
        # mariadb-install-db leaves a few files (mysql_upgrade_info) to its
        # caller: everything here is the service user's.
        entry = pwd.getpwnam(user)
        for path in [layout.root, *layout.root.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    return True


class PrivateServer:
    """A mariadbd child of this process, restarted if it dies unexpectedly."""

    def __init__(self, layout: PrivateLayout) -> None:
        self.layout = layout
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Start mariadbd and return once it reported READY=1.

        Raises:
            DbServerError: the data directory is not initialised, or mariadbd
                exited or stayed silent for `timeout_s`.
        """
        if not self.layout.initialised:
            raise DbServerError(f"no private MariaDB server in {self.layout.root};"
                                " run 'tidings db bootstrap --private' first")
        self._stopping.clear()
        self.proc = self._spawn(timeout_s)

    def supervise(self) -> None:
        """Restart mariadbd whenever it exits until `stop` is called."""
        self._watcher = threading.Thread(target=self._watch, name="mariadb-supervisor",
                                         daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            proc = self.proc
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.is_set():
                return
            delay = _RESTART_BACKOFF_S[min(attempt, len(_RESTART_BACKOFF_S) - 1)]
            log.error("private MariaDB server exited with %s; restarting in %.1f s", code, delay)
            if self._stopping.wait(delay):
                return
            try:
                self.proc = self._spawn(_START_TIMEOUT_S)
                attempt = 0
            except DbServerError as exc:
                log.error("private MariaDB server did not restart: %s", exc)
                attempt += 1

    def _spawn(self, timeout_s: float) -> subprocess.Popen[bytes]:
        with tempfile.TemporaryDirectory(prefix="tidings-notify-") as tmp:
            path = os.path.join(tmp, "notify")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                listener.bind(path)
                if os.geteuid() == 0 and self.layout.user != "root":
                    # mariadbd drops to the service user before it says READY=1.
                    entry = pwd.getpwnam(self.layout.user)
                    for owned in (tmp, path):
                        os.chown(owned, entry.pw_uid, entry.pw_gid)
                env = host_env(NOTIFY_SOCKET=path)
                proc = subprocess.Popen(self.layout.server_args(), env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
                self._await_ready(proc, listener, timeout_s)
            finally:
                listener.close()
        return proc

    def _await_ready(self, proc: subprocess.Popen[bytes], listener: socket.socket,
                     timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                proc.wait()
                raise DbServerError(f"mariadbd sent no READY=1 within {timeout_s:.0f} s;"
                                    f" see {self.layout.error_log}")
            # Wake up every 0.2 s to notice an early exit (a wait, not a
            # readiness guess: READY=1 ends it at once).
            listener.settimeout(min(remaining, 0.2))
            try:
                message = listener.recv(4096)
            except TimeoutError:
                if proc.poll() is not None:
                    raise DbServerError(
                        f"mariadbd exited with {proc.returncode} while starting:"
                        f" {self._log_tail()}") from None
                continue
            if b"READY=1" in message.split(b"\n"):
                return

    def _log_tail(self) -> str:
        try:
            return self.layout.error_log.read_text(errors="replace").strip()[-1500:]
        except OSError:
            return f"(no log at {self.layout.error_log})"

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """SIGTERM: mariadbd flushes and exits; SIGKILL only past `timeout_s`."""
        self._stopping.set()
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self.proc = None


def socket_live(path: Path) -> bool:
    """Whether a server accepts connections on the unix socket `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def exec_foreground(layout: PrivateLayout) -> None:
    """Become mariadbd (for the systemd unit: Type=notify sees its READY=1).

    Raises:
        DbServerError: the data directory is not initialised.
    """
    if not layout.initialised:
        raise DbServerError(f"no private MariaDB server in {layout.root};"
                            " run 'tidings db bootstrap --private' first")
    args = layout.server_args()
    os.execve(args[0], args, host_env())
