"""Composition root: configuration -> storage -> engine -> transport.

`serve` runs until SIGTERM or SIGINT, then drains: it stops accepting,
commits what is queued, tells every client GOING_AWAY and closes the store.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from appliance import __version__
from appliance.api.messages import BackendSender
from appliance.api.stats import AppFigures
from appliance.api.v1 import RestApi, Stats
from appliance.certs.challenges import ChallengeAnswers
from appliance.certs.manager import CertificateManager
from appliance.config import ApplianceConfig
from appliance.config.database import resolve_database
from appliance.dbserver.private import PrivateLayout, PrivateServer, socket_live
from appliance.engine.clock import SystemClock
from appliance.engine.core import Engine
from appliance.errors import ConfigError
from appliance.media.runtime import media_for
from appliance.metrics.config import allowed_networks
from appliance.metrics.exporter import Exporter
from appliance.metrics.wiring import exporter_for
from appliance.service.admin import AdminService
from appliance.service.database import running
from appliance.status.report import ServerState
from appliance.storage import Storage, open_storage
from appliance.transport.activation import MAIN, REDIRECT, listen_sockets
from appliance.transport.notify import Notifier
from appliance.transport.server import Server
from appliance.transport.status_report import StatusPublisher, listeners_of
from appliance.transport.tasks import LoopScheduler, spawn
from appliance.transport.tls import TlsContexts

log = logging.getLogger(__name__)


async def serve(config: ApplianceConfig, ready: Callable[[str, int, int | None], None],
                reload: Callable[[], ApplianceConfig] | None = None) -> None:
    """Run the server until SIGTERM/SIGINT; `ready(host, port, redirect_port)` once listening.

    SIGHUP reloads the TLS certificate, and the ``[edge]`` table from `reload()`
    (the configuration file read again) with the IP filter files.  Under
    systemd (packaging.md §4.2-4.6) it says READY=1 once listening with the
    store open, RELOADING=1 ... READY=1 around a reload, STOPPING=1, pings the
    watchdog, and listens on the sockets ``tidings.socket`` passed.

    Raises:
        ConfigError: the listen address cannot be bound, or a passed socket is unusable.
        StorageError: the store cannot be opened.
    """
    # The watchdog's SIGABRT (a stuck loop) leaves every thread's traceback in the log.
    faulthandler.enable()
    # Both first: they take their variables out of the environment before
    # anything (the private MariaDB server) is started with it.
    notifier = Notifier()
    sockets = listen_sockets()
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    try:
        private = await loop.run_in_executor(None, _start_private_server, config)
        try:
            await _serve(config, ready, clock, loop, reload or (lambda: config),
                         notifier, sockets)
        finally:
            if private is not None:
                await loop.run_in_executor(None, private.stop)
    finally:
        for sock in sockets.values():
            sock.close()
        notifier.close()


def _start_private_server(config: ApplianceConfig) -> PrivateServer | None:
    """Run the private MariaDB server as a supervised child, if it is the store.

    Not when it already answers: under systemd its own unit runs it.
    """
    location = resolve_database(config.storage.database, config.storage.data_dir)
    if not location.private or socket_live(Path(location.socket)):
        return None
    server = PrivateServer(PrivateLayout(config.storage.data_dir))
    server.start()
    server.supervise()
    log.info("started the private MariaDB server (pid %s)", server.proc and server.proc.pid)
    return server


async def _serve(config: ApplianceConfig, ready: Callable[[str, int, int | None], None],
                 clock: SystemClock, loop: asyncio.AbstractEventLoop,
                 reload: Callable[[], ApplianceConfig], notifier: Notifier,
                 sockets: dict[str, socket.socket]) -> None:
    store = await open_storage(config.storage, clock.wall_ms(), server=True)
    try:
        engine = Engine(store, clock, config.limits, LoopScheduler(loop),
                        server_version=f"tidings/{__version__}".encode())
        answers = ChallengeAnswers() if config.acme.hostnames else None
        tls = TlsContexts(config.tls.cert, config.tls.key, config.storage.data_dir, answers,
                          fetch_answer=(lambda name: store.challenge_answer(name, clock.wall_ms()))
                          if answers is not None else None,
                          hostnames=config.acme.hostnames)
        certs = None
        if answers is not None:
            certs = CertificateManager(
                config.acme, store, config.storage.data_dir, tls.use, answers,
                http01_available=config.server.redirect_port >= 0 or REDIRECT in sockets,
                now_ms=clock.wall_ms)
        server = Server(engine, config.limits, clock, tls, edge=config.edge,
                        data_dir=config.storage.data_dir, bounds=config.transport)
        api = server.api = RestApi(store, clock, BackendSender(engine, store), lambda: Stats(
            connections=len(server.connections), sessions=len(engine.registry),
            commits=engine.commits, failed_commits=engine.stats_failed_batches,
            credential_closes=engine.credentials.stats_closed,
            refusals={**engine.refusals, **server.refusals},
            tls=_tls_figures(tls, certs)),
            AppFigures(engine, clock))
        api.edge = server.edge
        api.groups = engine.groups  # changes announced to the members, as a GROUP_MANAGE's
        api.metrics = metrics = exporter_for(config.metrics, server, store, tls, certs)
        media = media_for(config.media, store, config.storage.data_dir, clock)
        api.files = media.files
        api.previews = media.previews
        api.on_auth = server.auth_result
        # Credential changes made here close this process's sessions at once;
        # secrets replaced by another process stop working at its next poll.
        api.credentials = engine.credentials
        api.presence = engine.presence
        engine.credentials.secrets_changed = lambda _app: api.forget_secrets()
        engine.credentials.tokens_changed = api.forget_tokens
        if certs is not None:
            await certs.load_stored()
        host, port = await server.start(config.server.host, config.server.port,
                                        sockets.get(MAIN))
        watcher = spawn(engine.credentials.run(), name="credentials")
        typing = spawn(engine.presence.run(), name="presence")
        media.start()
        redirect_port = None
        # A passed redirect socket is served even when the configuration has none:
        # systemd would otherwise hold its connections in the backlog for ever.
        if config.server.redirect_port >= 0 or REDIRECT in sockets:
            _, redirect_port = await server.start_redirect(
                config.server.host, config.server.redirect_port, sockets.get(REDIRECT))
        # Challenges are answered by the listeners, so they start first.
        maintainer = spawn(certs.run(), name="certificates") if certs is not None else None
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        status = _listening(host, port, redirect_port, sockets)
        reloader = Reloader(tls, server, reload, notifier, status, metrics)
        loop.add_signal_handler(signal.SIGHUP, reloader.request)
        _tune_gc()
        listeners = tuple(replace(listener, activated=listener.role in sockets)
                          for listener in listeners_of(host, port, redirect_port))
        publisher = StatusPublisher(server, config.storage.data_dir, resolve_database(
            config.storage.database, config.storage.data_dir), listeners, tls=tls,
            certs=certs, notify=notifier.send)
        publisher.publish()  # there before the line that says the server listens
        ready(host, port, redirect_port)
        notifier.ready(status)
        pinger = spawn(notifier.watchdog(), name="watchdog")
        reporter = spawn(publisher.run(), name="status-report")
        await stop.wait()
        notifier.stopping()
        publisher.publish(ServerState.STOPPING)
        reloader.cancel()
        pinger.cancel()
        reporter.cancel()
        watcher.cancel()
        typing.cancel()
        if maintainer is not None:
            maintainer.cancel()
        await server.stop(config.server.shutdown_timeout_s)
        await media.close()
        publisher.publish(ServerState.STOPPED)
    finally:
        await store.close()


def _tls_figures(tls: TlsContexts, certs: CertificateManager | None) -> dict[str, object]:
    """What `/v1/operator/stats` says about the served certificate."""
    if certs is not None:
        status = certs.status()
        return {"serving": status["serving"], "certificate": status}
    return {"serving": "self-signed" if tls.self_signed else "provided",
            "cert": str(tls.cert)}


def _listening(host: str, port: int, redirect_port: int | None,
               sockets: dict[str, socket.socket]) -> str:
    """The STATUS= line at READY=1 (``listening on host:port`` first: tests read it)."""
    text = f"listening on {host}:{port}"
    if redirect_port is not None:
        text += f", redirecting port {redirect_port}"
    if sockets:
        text += " (sockets from systemd)"
    return text


class Reloader:
    """SIGHUP: RELOADING=1, the certificate, the configuration's ``[edge]`` with the IP
    filter files and ``[metrics] allow``, then READY=1, also when something failed
    (the old settings stay and STATUS= says so).  Open connections stay up unless the
    new filter refuses their address.  A SIGHUP during a reload runs it once more
    before READY=1."""

    def __init__(self, tls: TlsContexts, server: Server, reload: Callable[[], ApplianceConfig],
                 notifier: Notifier, status: str, metrics: Exporter) -> None:
        self._tls = tls
        self._server = server
        self._metrics = metrics
        self._reload = reload
        self._notifier = notifier
        self._status = status
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def request(self) -> None:
        """The signal handler: start a reload, or ask the running one to go again."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._notifier.reloading()
        self._task = spawn(self._run(), name="reload")

    def cancel(self) -> None:
        """Shutdown: a reload under way is abandoned."""
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        failed: list[str] = []
        again = True
        while again:
            self._again = False
            try:
                failed = await self._once()
            except Exception:  # a bug must not leave the unit "reloading" for ever
                log.exception("reload failed")
                failed = ["internal error"]
            again = self._again
        # Not reached when cancelled: after STOPPING=1 there is no READY=1.
        if failed:
            self._notifier.ready(f"{self._status}; reload failed ({', '.join(failed)}),"
                                 " previous settings kept: see the log")
        else:
            self._notifier.ready(self._status)

    async def _once(self) -> list[str]:
        """One reload; what failed (and was kept as it was)."""
        failed = []
        try:
            self._tls.reload()
            log.info("TLS certificate reloaded from %s", self._tls.cert)
        except ConfigError as exc:
            log.error("TLS reload failed, keeping the previous certificate: %s", exc)
            failed.append("TLS certificate")
        try:
            config = self._reload()
            allow = allowed_networks(config.metrics)
        except ConfigError as exc:
            log.error("configuration not reloaded, keeping the previous edge settings"
                      " (and [metrics] allow): %s", exc)
            failed.append("configuration")
            edge = self._server.edge.config
        else:
            edge = config.edge
            self._metrics.reconfigure(allow)
            log.info("metrics: %d allowed networks", len(allow))
        if not await self._server.edge.try_reload(edge):
            failed.append("IP filter")
        return failed


def _tune_gc() -> None:
    """Keep the cycle collector off the message path.

    Per message the server allocates a few short-lived containers that
    reference counting frees; with the default thresholds they still trigger
    a young-generation pass every 700 allocations and a full pass over every
    object about twice a second (~40 ms each at 15k msg/s, ~15% of the CPU,
    measured with the reliable benchmark).  Objects that live for the whole
    run are frozen out of the scans, and the passes are made rarer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


@asynccontextmanager
async def admin(config: ApplianceConfig, app: str) -> AsyncIterator[AdminService]:
    """An `AdminService` on the configured store, closed afterwards."""
    clock = SystemClock()
    location = resolve_database(config.storage.database, config.storage.data_dir)
    with running(location, config.storage.data_dir):
        store: Storage = await open_storage(config.storage, clock.wall_ms())
        try:
            yield AdminService(store, clock, app)
        finally:
            await store.close()


@asynccontextmanager
async def store_of(config: ApplianceConfig) -> AsyncIterator[Storage]:
    """The configured store (the private server started if need be), closed afterwards."""
    clock = SystemClock()
    location = resolve_database(config.storage.database, config.storage.data_dir)
    with running(location, config.storage.data_dir):
        store: Storage = await open_storage(config.storage, clock.wall_ms())
        try:
            yield store
        finally:
            await store.close()
