"""The running server's status: ``<data_dir>/run/status.json`` and systemd's ``STATUS=``.

Published when the server starts listening, every `INTERVAL_S` while it
runs, and when it stops (`appliance.status.report` has the format).  A
snapshot costs a walk over the open connections (10 ms per 100 000 native
connections, measured: 0.2 % of a core at one report per 5 s) and a stat of
the certificate file; the file is written
from a worker thread, so a slow disk never holds up the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from appliance import __version__
from appliance.certs.manager import CertificateManager
from appliance.certs.status import pem_not_after_ms, served
from appliance.config.database import DatabaseLocation
from appliance.status.process import own_start_ticks
from appliance.status.report import (
    INTERVAL_S,
    Certificate,
    Listener,
    ServerState,
    StatusReport,
    write_report,
)
from appliance.transport.host import Host
from appliance.transport.http1 import HttpProtocol
from appliance.transport.http2 import Http2Protocol
from appliance.transport.notify import sd_notify
from appliance.transport.tls import TlsCarrier, TlsContexts
from appliance.transport.wire import WireProtocol

log = logging.getLogger(__name__)

#: Connection classes by the protocol name the report uses.
_PROTOCOLS: dict[type, str] = {WireProtocol: "native", HttpProtocol: "http1",
                               Http2Protocol: "http2", TlsCarrier: "tls_handshake"}


def count_by_protocol(connections: Iterable[object]) -> dict[str, int]:
    """Open connections by protocol: native, websocket, http1, http2, tls_handshake
    (a TLS connection counts as the protocol inside once its handshake is done)."""
    conns = list(connections)
    counts: dict[str, int] = {}
    for kind, n in collections.Counter(map(type, conns)).items():
        name = _PROTOCOLS.get(kind, "other")
        counts[name] = counts.get(name, 0) + n
    if counts.get("native"):
        websocket = sum(1 for c in conns if type(c) is WireProtocol and c.over_websocket)
        if websocket:
            counts["websocket"] = websocket
            counts["native"] -= websocket
    return counts


def listeners_of(host: str, port: int, redirect_port: int | None) -> tuple[Listener, ...]:
    """The listeners a server bound by itself (systemd's sockets: `activated`)."""
    main = (Listener("main", host, port),)
    return main if redirect_port is None else (*main, Listener("redirect", host, redirect_port))


def status_line(report: StatusReport) -> str:
    """systemd's one-line status (``systemctl status`` shows it as ``Status:``)."""
    line = (f"{report.connections} connections, {report.commit_queue} messages waiting"
            " for commit")
    return line + ("; store failing" if report.store_failing else "")


class StatusPublisher:
    """Writes the status file and tells systemd, for one running server."""

    def __init__(self, host: Host, data_dir: Path, store: DatabaseLocation,
                 listeners: tuple[Listener, ...], *, tls: TlsContexts | None = None,
                 certs: CertificateManager | None = None, interval_s: float = INTERVAL_S,
                 notify: Callable[..., bool] = sd_notify) -> None:
        self._host = host
        self._data_dir = data_dir
        self._store = store
        self.listeners = listeners
        self._tls = tls
        self._certs = certs
        self.interval_s = interval_s
        self._notify = notify
        self._pid, self._pid_start = os.getpid(), own_start_ticks()
        self._started_ms = host.clock.wall_ms()
        self._started = host.clock.monotonic()
        self._not_after: tuple[Path, int, int] | None = None  # (file, mtime_ns, not_after_ms)
        self._last_error = ""
        # Writes come from the loop (start, stop) and from worker threads (every
        # interval): one at a time, and never an older snapshot over a newer one
        # (a periodic write finishing late must not undo "stopped").
        self._lock = threading.Lock()
        self._taken = self._written = 0

    def snapshot(self, state: ServerState = ServerState.RUNNING) -> StatusReport:
        """The figures now (in the loop: they are the loop's own objects)."""
        clock, engine = self._host.clock, self._host.engine
        self._taken += 1
        by_protocol = count_by_protocol(self._host.connections)
        return StatusReport(
            pid=self._pid, pid_start=self._pid_start, version=__version__, state=state,
            started_ms=self._started_ms, updated_ms=clock.wall_ms(),
            uptime_s=clock.monotonic() - self._started, interval_s=self.interval_s,
            data_dir=str(self._data_dir), listeners=self.listeners,
            connections=sum(by_protocol.values()), by_protocol=by_protocol,
            commit_queue=engine.uncommitted, store_failing=engine.store_failing,
            store_backend=self._store.kind, store_location=self._store.describe(),
            certificate=self._certificate())

    def publish(self, state: ServerState = ServerState.RUNNING) -> None:
        """Write the file now, from the loop (at start and at stop: it must be there)."""
        report = self.snapshot(state)
        self._write(report, self._taken)
        self._notify(f"STATUS={status_line(report)}")

    async def run(self) -> None:
        """Publish every `interval_s` until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval_s)
            report = self.snapshot()
            await loop.run_in_executor(None, self._write, report, self._taken)
            self._notify(f"STATUS={status_line(report)}")

    def _write(self, report: StatusReport, taken: int) -> None:
        with self._lock:
            if taken <= self._written:
                return
            try:
                write_report(self._data_dir, report)
            except OSError as exc:
                # Advisory, like sd_notify: a full disk must not stop the server; said once.
                error = f"cannot write the status file in {self._data_dir}: {exc.strerror}"
                if error != self._last_error:
                    log.warning("%s", error)
                self._last_error = error
                return
            self._written, self._last_error = taken, ""

    def _certificate(self) -> Certificate | None:
        tls = self._tls
        if tls is None:
            return None
        certs = self._certs
        serving = ("acme" if certs is not None and certs.serving == "acme"
                   else "self-signed" if tls.self_signed else "provided")
        not_after = self._file_not_after(tls.cert)
        if certs is None:
            return served(serving, not_after)
        return served(serving, not_after, certs.config, certs.current, certs.state,
                      certs.suggested_ms)

    def _file_not_after(self, path: Path) -> int:
        """The served file's expiry, parsed again only when the file changed."""
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return 0
        cached = self._not_after
        if cached is None or cached[:2] != (path, mtime):
            cached = self._not_after = (path, mtime, pem_not_after_ms(path))
        return cached[2]
