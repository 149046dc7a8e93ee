"""The status file: what the running server publishes about itself (issue 14).

``<data_dir>/run/status.json``, written by the server at start, every
`INTERVAL_S` and at stop, replaced atomically (a reader sees the old file
or the new one), mode 0640.  Read by `tidings status` and `tidings doctor`,
often as root, from a directory the service user owns: the reader treats it
as outside input (no symlinks, no FIFOs, bounded size, every field
type- and range-checked).  It never holds a secret: the store is described
by `DatabaseLocation.describe()`, which leaves the password out.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import stat
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from appliance.errors import StatusFileError

#: Bumped when a field changes meaning; a reader refuses a format it does not know.
FORMAT: Final = 1
RUN_DIR: Final = "run"
STATUS_NAME: Final = "status.json"
#: How often the server rewrites the file (and sends systemd its STATUS= line).
INTERVAL_S: Final = 5.0
#: A report older than this many intervals comes from a server that stopped answering.
STALE_INTERVALS: Final = 3
#: What a reader accepts: the file is a few hundred bytes.
MAX_BYTES: Final = 64 * 1024
_MAX_TEXT = 512
_MAX_LISTENERS = 8
_MAX_PROTOCOLS = 16
_MAX_COUNT = 2**40
_MAX_MS = 2**53  # JSON numbers stay exact below this
_DAY_MS = 86_400_000


class ServerState(StrEnum):
    """Where the server is in its life."""

    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening socket; `activated`: handed over by systemd (socket activation)."""

    role: str  # "main" or "redirect"
    host: str
    port: int
    activated: bool = False


@dataclass(frozen=True, slots=True)
class Certificate:
    """The certificate the server serves.

    `serving`: ``self-signed``, ``provided`` (the ``[tls]`` files) or ``acme``.
    `renewal`: ``automatic`` (ACME, last attempt fine), ``failing`` (ACME,
    attempts failing), ``manual`` (provided: the operator replaces it),
    ``none`` (self-signed).
    """

    serving: str
    not_after_ms: int = 0  # 0: unknown
    renewal: str = "none"
    failed_attempts: int = 0
    last_error: str = ""
    next_renewal_ms: int = 0

    def days_left(self, now_ms: int) -> float | None:
        """Days until it expires (negative: expired); None when unknown."""
        return (self.not_after_ms - now_ms) / _DAY_MS if self.not_after_ms else None


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One snapshot of the running server."""

    pid: int
    #: The process's start time in clock ticks since boot (/proc/<pid>/stat
    #: field 22): tells the server from a later process that got its pid.
    pid_start: int
    version: str
    state: ServerState
    started_ms: int
    updated_ms: int
    uptime_s: float
    interval_s: float
    data_dir: str
    listeners: tuple[Listener, ...] = ()
    connections: int = 0
    #: Open connections by protocol (native, websocket, http1, http2, tls_handshake).
    by_protocol: dict[str, int] = field(default_factory=dict)
    #: Messages accepted and waiting for the next group commit (not yet SENT).
    commit_queue: int = 0
    #: The last group commit failed: senders hear FAILED until the store is back.
    store_failing: bool = False
    store_backend: str = ""
    store_location: str = ""
    certificate: Certificate | None = None

    def main_listener(self) -> Listener | None:
        """The listener of the native/HTTPS port."""
        return next((x for x in self.listeners if x.role == "main"), None)

    def stale(self, now_ms: int) -> bool:
        """True when the server has not rewritten the file for `STALE_INTERVALS` intervals."""
        return now_ms - self.updated_ms > STALE_INTERVALS * self.interval_s * 1000


def status_path(data_dir: Path) -> Path:
    """Where the server of `data_dir` publishes its status."""
    return data_dir / RUN_DIR / STATUS_NAME


def iso(ms: int) -> str | None:
    """Epoch milliseconds as RFC 3339 UTC; None for 0 (unknown)."""
    if not ms:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def to_json(report: StatusReport) -> bytes:
    """The file's bytes (times both as epoch ms and RFC 3339 for people and scripts)."""
    cert = report.certificate
    doc: dict[str, Any] = {
        "format": FORMAT, "state": report.state.value, "pid": report.pid,
        "pid_start": report.pid_start, "version": report.version,
        "started_ms": report.started_ms, "started_at": iso(report.started_ms),
        "updated_ms": report.updated_ms, "updated_at": iso(report.updated_ms),
        "uptime_s": round(report.uptime_s, 3), "interval_s": report.interval_s,
        "data_dir": report.data_dir,
        "listeners": [{"role": x.role, "host": x.host, "port": x.port,
                       "activated": x.activated} for x in report.listeners],
        "connections": {"open": report.connections, "by_protocol": report.by_protocol},
        "queue": {"commit_queue": report.commit_queue, "store_failing": report.store_failing},
        "store": {"backend": report.store_backend, "location": report.store_location},
        "certificate": None if cert is None else {
            "serving": cert.serving, "not_after_ms": cert.not_after_ms,
            "not_after": iso(cert.not_after_ms),
            "days_left": _round(cert.days_left(report.updated_ms)),
            "renewal": cert.renewal, "failed_attempts": cert.failed_attempts,
            "last_error": cert.last_error or None, "next_renewal_ms": cert.next_renewal_ms,
            "next_renewal": iso(cert.next_renewal_ms)},
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


def _round(days: float | None) -> float | None:
    return None if days is None else round(days, 2)


def write_report(data_dir: Path, report: StatusReport) -> Path:
    """Replace the status file atomically (0640 in a 0750 directory); returns its path.

    No fsync: after a crash the file is stale anyway, and a reader tells by
    `updated_ms` and the pid.

    Raises:
        OSError: the run directory cannot be written.
    """
    path = status_path(data_dir)
    if not path.parent.is_dir():
        path.parent.mkdir()
        path.parent.chmod(0o750)  # the group (the service's) may read; the umask said 0700
    tmp = path.with_name(f".{STATUS_NAME}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o640)
    try:
        os.fchmod(fd, 0o640)  # the process umask (077) would leave it 0600
        with os.fdopen(fd, "wb") as f:
            f.write(to_json(report))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_report(data_dir: Path) -> StatusReport | None:
    """The last report of the server of `data_dir`; None when there is none.

    Raises:
        StatusFileError: the file cannot be read (permissions), is not a
            regular file, is too large, or is not a status report.
    """
    path = status_path(data_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StatusFileError(f"cannot read {path}: {exc.strerror}"
                              + (" (run as root or as the service user)"
                                 if isinstance(exc, PermissionError) else "")) from None
    with contextlib.closing(os.fdopen(fd, "rb")) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StatusFileError(f"{path} is not a regular file")
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise StatusFileError(f"{path} is larger than {MAX_BYTES} bytes: not a status file")
    return parse(data, str(path))


def parse(data: bytes, where: str = "status file") -> StatusReport:
    """Check and decode a status file's bytes.

    Raises:
        StatusFileError: not JSON, an unknown format, or a field of the wrong
            type or out of range (the message names the field).
    """
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise StatusFileError(f"{where}: not JSON") from None
    reader = _Reader(where)
    obj = reader.table(doc, "")
    if reader.integer(obj, "format", 1, 1000) != FORMAT:
        raise StatusFileError(f"{where}: format {obj['format']} is not one this version reads")
    conns = reader.table(obj.get("connections"), "connections")
    queue = reader.table(obj.get("queue"), "queue")
    store = reader.table(obj.get("store"), "store")
    listeners = reader.array(obj.get("listeners"), "listeners", _MAX_LISTENERS)
    by_protocol = reader.table(conns.get("by_protocol"), "connections.by_protocol")
    if len(by_protocol) > _MAX_PROTOCOLS:
        raise StatusFileError(f"{where}: connections.by_protocol has too many entries")
    try:
        state = ServerState(reader.text(obj, "state"))
    except ValueError:
        raise StatusFileError(f"{where}: state {obj['state']!r} is unknown") from None
    return StatusReport(
        pid=reader.integer(obj, "pid", 1, 2**22), pid_start=reader.integer(obj, "pid_start", 0),
        version=reader.text(obj, "version"), state=state,
        started_ms=reader.integer(obj, "started_ms", 0, _MAX_MS),
        updated_ms=reader.integer(obj, "updated_ms", 0, _MAX_MS),
        uptime_s=reader.number(obj, "uptime_s", 0, 1e10),
        interval_s=reader.number(obj, "interval_s", 0.05, 3600),
        data_dir=reader.text(obj, "data_dir"),
        listeners=tuple(_listener(reader, reader.table(x, "listeners[]")) for x in listeners),
        connections=reader.integer(conns, "open", 0),
        by_protocol={printable(k)[:32]: reader.integer(by_protocol, k, 0) for k in by_protocol},
        commit_queue=reader.integer(queue, "commit_queue", 0),
        store_failing=reader.flag(queue, "store_failing"),
        store_backend=reader.text(store, "backend"), store_location=reader.text(store, "location"),
        certificate=_certificate(reader, obj.get("certificate")))


def printable(text: str) -> str:
    """`text` fit for an operator's terminal: control characters (escape sequences) as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _listener(reader: _Reader, obj: dict[str, Any]) -> Listener:
    return Listener(reader.text(obj, "role"), reader.text(obj, "host"),
                    reader.integer(obj, "port", 0, 65535), reader.flag(obj, "activated"))


def _certificate(reader: _Reader, value: object) -> Certificate | None:
    if value is None:
        return None
    obj = reader.table(value, "certificate")
    return Certificate(
        serving=reader.text(obj, "serving"),
        not_after_ms=reader.integer(obj, "not_after_ms", 0, _MAX_MS),
        renewal=reader.text(obj, "renewal"),
        failed_attempts=reader.integer(obj, "failed_attempts", 0, 2**31),
        last_error=reader.text(obj, "last_error", optional=True),
        next_renewal_ms=reader.integer(obj, "next_renewal_ms", 0, _MAX_MS))


class _Reader:
    """Field accessors that name the field they refuse."""

    def __init__(self, where: str) -> None:
        self.where = where

    def _fail(self, key: str, what: str) -> StatusFileError:
        return StatusFileError(f"{self.where}: {key} {what}")

    def table(self, value: object, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self._fail(key or "the document", "is not an object")
        return value

    def array(self, value: object, key: str, most: int) -> list[Any]:
        if not isinstance(value, list):
            raise self._fail(key, "is not a list")
        if len(value) > most:
            raise self._fail(key, f"has more than {most} entries")
        return value

    def integer(self, obj: dict[str, Any], key: str, lo: int, hi: int = _MAX_COUNT) -> int:
        value = obj.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise self._fail(key, f"must be an integer in [{lo}, {hi}]")
        return value

    def number(self, obj: dict[str, Any], key: str, lo: float, hi: float) -> float:
        value = obj.get(key)
        if (not isinstance(value, int | float) or isinstance(value, bool)
                or not lo <= value <= hi):
            raise self._fail(key, f"must be a number in [{lo}, {hi}]")
        return float(value)

    def text(self, obj: dict[str, Any], key: str, *, optional: bool = False) -> str:
        value = obj.get(key)
        if value is None and optional:
            return ""
        if not isinstance(value, str) or len(value) > _MAX_TEXT:
            raise self._fail(key, f"must be a string of at most {_MAX_TEXT} characters")
        return printable(value)

    def flag(self, obj: dict[str, Any], key: str) -> bool:
        value = obj.get(key)
        if not isinstance(value, bool):
            raise self._fail(key, "must be true or false")
        return value
