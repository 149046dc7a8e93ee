"""Composition root: configuration -> storage -> engine -> transport.

`serve` runs until SIGTERM or SIGINT, then drains: it stops accepting,
commits what is queued, tells every client GOING_AWAY and closes the store.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
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
from appliance.engine.delivery import Engine
from appliance.errors import ConfigError
from appliance.metrics.wiring import exporter_for
from appliance.service.admin import AdminService
from appliance.service.database import running
from appliance.status.report import ServerState
from appliance.storage import Storage, open_storage
from appliance.transport.notify import sd_notify
from appliance.transport.server import Server
from appliance.transport.status_report import StatusPublisher, listeners_of
from appliance.transport.tasks import LoopScheduler, spawn
from appliance.transport.tls import TlsContexts

log = logging.getLogger(__name__)


async def serve(config: ApplianceConfig, ready: Callable[[str, int, int | None], None],
                reload: Callable[[], ApplianceConfig] | None = None) -> None:
    """Run the server until SIGTERM/SIGINT; `ready(host, port, redirect_port)` once listening.

    SIGHUP reloads the TLS certificate, and the ``[edge]`` table from `reload()`
    (the configuration file read again) with the IP filter files.

    Raises:
        ConfigError: the listen address cannot be bound.
        StorageError: the store cannot be opened.
    """
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    private = await loop.run_in_executor(None, _start_private_server, config)
    try:
        await _serve(config, ready, clock, loop, reload or (lambda: config))
    finally:
        if private is not None:
            await loop.run_in_executor(None, private.stop)


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
                 reload: Callable[[], ApplianceConfig]) -> None:
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
                http01_available=config.server.redirect_port >= 0, now_ms=clock.wall_ms)
        server = Server(engine, config.limits, clock, tls, edge=config.edge,
                        data_dir=config.storage.data_dir, bounds=config.transport)
        api = server.api = RestApi(store, clock, BackendSender(engine, store), lambda: Stats(
            connections=len(server.connections), sessions=len(engine.by_device),
            commits=engine.commits, failed_commits=engine.stats_failed_batches,
            credential_closes=engine.credentials.stats_closed,
            refusals={**engine.refusals, **server.refusals},
            tls=_tls_figures(tls, certs)),
            AppFigures(engine, clock))
        api.edge = server.edge
        api.metrics = exporter_for(config.metrics, server, store, tls, certs)
        api.on_auth = server.auth_result
        # Credential changes made here close this process's sessions at once;
        # secrets replaced by another process stop working at its next poll.
        api.credentials = engine.credentials
        engine.credentials.secrets_changed = lambda _app: api.forget_secrets()
        if certs is not None:
            await certs.load_stored()
        host, port = await server.start(config.server.host, config.server.port)
        watcher = spawn(engine.credentials.run(), name="credentials")
        redirect_port = None
        if config.server.redirect_port >= 0:
            _, redirect_port = await server.start_redirect(config.server.host,
                                                           config.server.redirect_port)
        # Challenges are answered by the listeners, so they start first.
        maintainer = spawn(certs.run(), name="certificates") if certs is not None else None
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, _reload, tls, server, reload)
        _tune_gc()
        status = StatusPublisher(server, config.storage.data_dir, resolve_database(
            config.storage.database, config.storage.data_dir),
            listeners_of(host, port, redirect_port), tls=tls, certs=certs)
        status.publish()  # there before the line that says the server listens
        ready(host, port, redirect_port)
        sd_notify("READY=1", f"STATUS=listening on {host}:{port}")
        reporter = spawn(status.run(), name="status-report")
        await stop.wait()
        sd_notify("STOPPING=1")
        status.publish(ServerState.STOPPING)
        reporter.cancel()
        watcher.cancel()
        if maintainer is not None:
            maintainer.cancel()
        await server.stop(config.server.shutdown_timeout_s)
        status.publish(ServerState.STOPPED)
    finally:
        await store.close()


def _tls_figures(tls: TlsContexts, certs: CertificateManager | None) -> dict[str, object]:
    """What `/v1/operator/stats` says about the served certificate."""
    if certs is not None:
        status = certs.status()
        return {"serving": status["serving"], "certificate": status}
    return {"serving": "self-signed" if tls.self_signed else "provided",
            "cert": str(tls.cert)}


def _reload(tls: TlsContexts, server: Server, reload: Callable[[], ApplianceConfig]) -> None:
    """SIGHUP: the certificate, then the edge (filter, limits); open connections stay up
    unless the new filter refuses their address."""
    _reload_tls(tls)
    try:
        edge = reload().edge
    except ConfigError as exc:
        log.error("configuration not reloaded, keeping the previous edge settings: %s", exc)
        edge = server.edge.config
    spawn(server.edge.reload(edge), name="edge-reload")


def _reload_tls(tls: TlsContexts) -> None:
    """SIGHUP: new connections get the certificate now on disk; open ones stay up."""
    try:
        tls.reload()
    except ConfigError as exc:
        log.error("TLS reload failed, keeping the previous certificate: %s", exc)
        return
    log.info("TLS certificate reloaded from %s", tls.cert)


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
