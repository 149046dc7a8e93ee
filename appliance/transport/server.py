"""The listening server: bind, accept, enforce connection deadlines, drain on stop.

`start()` returns only once the socket is listening and knows its real
port, so callers (and tests binding port 0) never guess or sleep.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import socket
from pathlib import Path
from typing import Any

from appliance.config.limits import EngineLimits
from appliance.config.model import TransportConfig
from appliance.edge.config import EdgeConfig
from appliance.engine.clock import Clock
from appliance.engine.core import Engine
from appliance.errors import ConfigError, StorageError
from appliance.protocol.sniff import Detected
from appliance.protocol.wire import CloseCode
from appliance.transport.acceptor import Edge
from appliance.transport.bounds import ByteBudget
from appliance.transport.host import Api, Connection, Flushable
from appliance.transport.http1 import HttpProtocol
from appliance.transport.http2 import Http2Protocol
from appliance.transport.redirect import RedirectProtocol
from appliance.transport.tasks import spawn
from appliance.transport.tls import TlsCarrier, TlsContexts
from appliance.transport.wire import WireProtocol

log = logging.getLogger(__name__)

#: listen(2) backlog: connection attempts queued while the server is busy, or (socket
#: activation, systemd/tidings.socket says the same) restarting.  The kernel caps it
#: at net.core.somaxconn (4096 on Linux >= 5.4).
BACKLOG = 4096
#: How often the deadline scan runs: deadlines are kept to within this.
_SCAN_INTERVAL_S = 1.0
#: Shutdown: how long a request begun before SIGTERM has to be answered.  Answers
#: take milliseconds; an upload still arriving is cut after this (tus resumes it),
#: and a slow peer cannot hold an upgrade's downtime up for longer.
ANSWER_GRACE_S = 3.0
#: Shutdown: how long a connection accepted just before SIGTERM has to send its
#: first bytes.  An honest client sends them right after connecting (one round
#: trip); a silent one is not worth a longer restart.
FIRST_BYTES_GRACE_S = 1.0
#: How often the shutdown looks whether every begun answer has gone.  Polling:
#: connections finish in a dozen places, and it lasts a second or two at most.
_SETTLE_POLL_S = 0.02


class Server:
    """Accepts native-protocol connections and hands them to the engine (a `Host`)."""

    def __init__(self, engine: Engine, limits: EngineLimits, clock: Clock,
                 tls: TlsContexts | None = None, api: Api | None = None, *,
                 edge: EdgeConfig | None = None, data_dir: Path | None = None,
                 bounds: TransportConfig | None = None) -> None:
        self.engine = engine
        self.tls = tls
        self.api = api
        self.limits = limits
        self.bounds = bounds or TransportConfig()
        self.clock = clock
        self.connections: set[Connection] = set()
        #: SIGTERM came: answers say ``Connection: close``, HELLOs get GOING_AWAY.
        self.stopping = False
        self.refusals: collections.Counter[str] = collections.Counter()
        self.body_budget = ByteBudget(self.bounds.h2_body_bytes_total)
        self._server: asyncio.Server | None = None
        self._redirect: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.address: tuple[str, int] = ("", 0)
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self._dirty: list[Flushable] = []
        #: The acceptor's filter, limits and counters (SPEC M13).
        self.edge = Edge(edge or EdgeConfig(), data_dir or Path("."), clock, self.protocol_for,
                         self.bounds.handshake_timeout_s)

    def protocol_for(self, kind: Detected, transport: asyncio.Transport
                     ) -> asyncio.Protocol | None:
        """The protocol object for a connection that speaks `kind`, made on `transport`."""
        if kind is Detected.NATIVE or kind is Detected.UNKNOWN:
            # Garbage too: the native codec checks the preface and says why not.
            wire = WireProtocol(self)
            wire.connection_made(transport)
            return wire
        if kind is Detected.HTTP1:
            return HttpProtocol(self, transport)
        if (kind is Detected.TLS and self.tls is not None
                and transport.get_extra_info("ssl_object") is None):  # no TLS inside TLS
            carrier = TlsCarrier(transport, self.tls.current, self._inside_tls,
                                 self.connections.discard, self.clock.monotonic(),
                                 self.bounds.handshake_timeout_s, self.tls.chooser())
            self.connections.add(carrier)  # the handshake timeout applies to TLS too
            return carrier
        if kind is Detected.HTTP2:  # prior knowledge, in clear or inside TLS
            h2 = Http2Protocol(self)
            h2.connection_made(transport)
            return h2
        return None  # TLS inside TLS: never

    def hand_over(self, transport: asyncio.Transport, kind: Detected, first_bytes: bytes) -> None:
        """Inside TLS, a connection turned out not to speak the native protocol."""
        protocol = self.protocol_for(kind, transport)
        if protocol is None:
            transport.close()
            return
        transport.set_protocol(protocol)
        protocol.data_received(first_bytes)

    def auth_result(self, transport: Any, ok: bool) -> None:
        """A HELLO or a REST authentication on `transport` passed or failed (the edge counts
        failures per address and blocks repeat offenders)."""
        self.edge.auth_result(transport, ok)

    def _inside_tls(self, carrier: TlsCarrier, alpn: str | None) -> asyncio.Protocol:
        if alpn == "h2":
            return Http2Protocol(self)
        # Otherwise the first plaintext bytes decide again: native or HTTP/1.1.
        return WireProtocol(self)

    def mark_dirty(self, conn: Flushable) -> None:
        """`conn` has queued output: flush it after this read, or this loop turn."""
        if not self._dirty:
            self.loop.call_soon(self.flush_dirty)
        self._dirty.append(conn)

    def flush_dirty(self) -> None:
        """Send every connection's queued frames (one syscall each)."""
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    async def start(self, host: str, port: int, sock: socket.socket | None = None
                    ) -> tuple[str, int]:
        """Listen on host:port (port 0 picks a free one), or on `sock`, a listening
        socket systemd passed (`appliance.transport.activation`); return the address.

        Raises:
            ConfigError: the address cannot be bound (key ``server.listen``).
        """
        loop = asyncio.get_running_loop()
        try:
            if sock is not None:
                self._server = await loop.create_server(self.edge.gate, sock=sock,
                                                        backlog=BACKLOG)
            else:
                self._server = await loop.create_server(
                    self.edge.gate, host, port, backlog=BACKLOG, reuse_address=True)
        except OSError as exc:
            reason = errno.errorcode.get(exc.errno or 0, str(exc))
            raise ConfigError(f"cannot listen on {host}:{port}: {reason} ({exc.strerror})",
                              key_path="server.listen") from None
        sock = self._server.sockets[0]
        self.address = sock.getsockname()[:2]
        self._tasks.append(spawn(self._scan_idle(), name="idle-scan"))
        self._tasks.append(spawn(self._sweep(), name="expiry-sweep"))
        return self.address

    async def start_redirect(self, host: str, port: int, sock: socket.socket | None = None
                             ) -> tuple[str, int]:
        """Listen on host:port (or on `sock`, passed by systemd) for plain HTTP that is
        redirected to HTTPS on our port.

        Raises:
            ConfigError: the address cannot be bound (key ``server.redirect_port``).
        """
        loop = asyncio.get_running_loop()
        tls_port = self.address[1]
        answers = self.tls.answers if self.tls is not None else None
        fetch = self.tls.fetch_answer if self.tls is not None else None
        def protocol(challenges_only: bool) -> RedirectProtocol:
            return RedirectProtocol(tls_port, answers, fetch, challenges_only=challenges_only)

        self.edge.redirect_for = protocol
        self.edge.redirect_answers_acme = answers is not None
        try:
            if sock is not None:
                self._redirect = await loop.create_server(self.edge.redirect_gate, sock=sock,
                                                          backlog=BACKLOG)
            else:
                self._redirect = await loop.create_server(
                    self.edge.redirect_gate, host, port, backlog=BACKLOG, reuse_address=True)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}",
                              key_path="server.redirect_port") from None
        bound: tuple[str, int] = self._redirect.sockets[0].getsockname()[:2]
        return bound

    async def _scan_idle(self) -> None:
        """Each connection knows its deadlines (handshake, request, keep-alive, a
        peer that stopped reading); once a second, each checks them."""
        while True:
            await asyncio.sleep(_SCAN_INTERVAL_S)
            try:
                self.edge.sweep()
            except Exception:  # a bug there must not end the idle scan
                log.exception("edge sweep failed")
            now = self.clock.monotonic()
            for conn in list(self.connections):
                conn.check_deadline(now)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.limits.sweep_interval_s)
            try:
                await self.engine.sweep_once()
            except StorageError as exc:
                # The database is away (SPEC M14): the next sweep catches up.
                log.warning("expiry sweep skipped: %s", exc)
                self.engine.figures.store_errors["sweep"] += 1
            except Exception:
                log.exception("expiry sweep failed")

    async def stop(self, deadline_s: float = 10.0) -> None:
        """Stop accepting, commit what is queued, say GOING_AWAY to native clients,
        answer every HTTP request that has begun (with ``Connection: close``), then close.

        Only a crash may cut an answer: a restart or an upgrade loses no request
        the old server had accepted, and what waits in the socket's backlog is
        the next server's (socket activation).
        """
        self.stopping = True
        log.info("stopping: accepting no more connections; %d open, %d not yet speaking",
                 len(self.connections), len(self.edge.pending))
        if self._server is not None:
            self._server.close()
        if self._redirect is not None:
            self._redirect.close()
        for task in self._tasks:
            task.cancel()
        self.engine.presence.stopping()  # last-seen times, committed by the drain
        await self._drain_writes(deadline_s)
        for conn in list(self.connections):
            conn.finish()
        await self._settle(min(deadline_s, ANSWER_GRACE_S))
        await self._drain_writes(deadline_s)  # what the last answers submitted
        self.edge.close_pending()
        for conn in list(self.connections):
            conn.close(CloseCode.GOING_AWAY, "")  # past the grace: just go
        if self._server is not None:
            try:
                async with asyncio.timeout(deadline_s):
                    await self._server.wait_closed()
            except TimeoutError:
                log.warning("shutdown: connections still open after %.0f s", deadline_s)

    async def _drain_writes(self, deadline_s: float) -> None:
        try:
            async with asyncio.timeout(deadline_s):
                await self.engine.drain_writes()
        except TimeoutError:
            log.error("shutdown: queued writes not committed within %.0f s", deadline_s)

    async def _settle(self, grace_s: float) -> None:
        """Until every begun answer has gone and every accepted connection has said
        what it speaks (or the graces end)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while (answering := [c for c in self.connections if not c.finished()]) \
                or self.edge.pending:
            elapsed = loop.time() - start
            if elapsed >= grace_s:
                log.warning("shutdown: %d connections still answering after %.1f s: closed",
                            len(answering), grace_s)
                return
            if self.edge.pending and elapsed >= FIRST_BYTES_GRACE_S:
                self.edge.close_pending()  # silent since before SIGTERM
            await asyncio.sleep(_SETTLE_POLL_S)
