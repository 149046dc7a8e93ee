"""The connection task of the SDK's `Client`: connect, HELLO, WELCOME, keepalive, reconnect.

One task per client (`ConnectionFeatures._run`) connects over TCP (or TLS,
or inside WebSocket), sends HELLO, waits for WELCOME, then resends the outbox
and the READ reports the store holds (PROTOCOL.md §6 rule 1) and keeps the
connection alive with PINGs.  When it ends, the task reconnects after a
backoff with jitter (`Backoff`), from zero after a connection that got
online; an error that retrying cannot cure (a bad token...) stops it.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from appliance.protocol.wire import (
    CloseCode,
    Feature,
    Hello,
    Ping,
    Status,
    StatusReport,
    Welcome,
)
from appliance.sdk.errors import (
    ClientConnectionError,
    ClientError,
    ConnectFailedError,
    HandshakeTimeoutError,
)
from appliance.sdk.events import Backoff, _Events
from appliance.sdk.models import ConnectionEvent, ConnectionState, OutgoingMessage
from appliance.sdk.native import NativeWire
from appliance.sdk.server_info import HELLO_FLAGS, ServerLimits, server_info

if TYPE_CHECKING:
    from appliance.sdk.client import Client
    from appliance.sdk.store import LocalStore


class ConnectionFeatures:
    """The connection half of `Client` (a mixin: the client holds the store and the events)."""

    host: str
    port: int
    ssl: ssl_module.SSLContext | None
    websocket: bool
    connect_timeout_s: float
    keepalive_s: int
    backoff: Backoff
    device_id: str
    state: ConnectionState
    last_error: ClientConnectionError | None
    address: str
    max_frame_bytes: int
    limits: ServerLimits
    server_features: Feature
    _token: bytes
    _closing: bool
    _online: asyncio.Event
    _connection_events: _Events[ConnectionEvent]
    _wire: NativeWire | None
    _store: LocalStore | None
    _st_new: list[StatusReport]
    _outbox: Callable[[LocalStore], tuple[list[OutgoingMessage], list[int]]]
    _write_message: Callable[[NativeWire, OutgoingMessage], None]
    _queue_commit: Callable[[], None]
    _fail_realtime: Callable[[], None]
    _send_reads: Callable[[], None]
    _presence_online: Callable[[NativeWire], None]

    def _set_state(self, state: ConnectionState, error: ClientConnectionError | None = None,
                   retry_in_s: float | None = None) -> None:
        if state is self.state and error is None:
            return
        self.state = state
        if error is not None:
            self.last_error = error
        if state is ConnectionState.ONLINE:
            self._online.set()
        else:
            self._online.clear()
        self._connection_events.emit(ConnectionEvent(state, error, retry_in_s))

    async def _run(self) -> None:
        attempt = 0
        try:
            while True:
                self._set_state(ConnectionState.CONNECTING)
                error, was_online = await self._connect_once()
                if self._closing:
                    break
                if not error.retryable:
                    self._set_state(ConnectionState.STOPPED, error)
                    return
                attempt = 0 if was_online else attempt + 1
                delay = self.backoff.delay(attempt)
                self._set_state(ConnectionState.OFFLINE, error, delay)
                await asyncio.sleep(delay)
        finally:
            self._wire = None

    async def _connect_once(self) -> tuple[ClientConnectionError, bool]:
        """One connection, from TCP connect to its end; returns why it ended."""
        loop = asyncio.get_running_loop()
        try:
            transport, wire = await asyncio.wait_for(
                loop.create_connection(self._new_wire, self.host, self.port, ssl=self.ssl,
                                       server_hostname=self.host if self.ssl else None),
                self.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            return ConnectFailedError(f"cannot connect to {self.host}:{self.port}: "
                                      f"{str(exc) or 'timed out'}"), False
        # uvloop may call connection_made only after create_connection returned.
        wire.transport = transport
        self._wire = wire
        try:
            wire.start(wire.codec.send(Hello(self._token, self.device_id.encode(),
                                             self.keepalive_s, HELLO_FLAGS)))
            try:
                welcome = await asyncio.wait_for(asyncio.shield(wire.welcome),
                                                 self.connect_timeout_s)
            except TimeoutError:
                wire.fail(HandshakeTimeoutError(
                    f"no WELCOME within {self.connect_timeout_s} s"), CloseCode.NORMAL)
                return await wire.closed, False
            except ClientConnectionError:
                return await wire.closed, False
            self._online_with(wire, welcome)
            await self._keepalive(wire, welcome.keepalive_s or self.keepalive_s)
            return await wire.closed, True
        finally:
            wire.online = False
            self._wire = None
            if wire.transport is not None:
                wire.transport.abort()
            self._fail_realtime()

    def _new_wire(self) -> NativeWire:
        client = cast("Client", self)  # the wire hands its frames to the whole client
        if not self.websocket:
            return NativeWire(client)
        try:
            from appliance.sdk.websocket import WebSocketWire
        except ImportError:
            raise ClientError("WebSocket needs wsproto: pip install 'tidings-sdk[websocket]'"
                              ) from None
        return WebSocketWire(client, f"{self.host}:{self.port}")

    def _online_with(self, wire: NativeWire, welcome: Welcome) -> None:
        self.address = welcome.address.decode("utf-8", "replace")
        self.max_frame_bytes = welcome.max_frame_bytes
        self.limits, self.server_features = server_info(welcome)
        wire.online = True
        store = self._store
        assert store is not None
        # What the store holds unanswered goes first, in order, with its ids
        # (PROTOCOL.md §6 rule 1); what this turn sends follows with its commit.
        waiting, expired = self._outbox(store)
        for m in waiting:
            self._write_message(wire, m)
        self._st_new.extend(StatusReport(i, Status.EXPIRED) for i in expired)
        if expired:
            self._queue_commit()
        self._send_reads()
        self._presence_online(wire)
        self._set_state(ConnectionState.ONLINE)

    async def _keepalive(self, wire: NativeWire, keepalive_s: int) -> None:
        """PING when idle; give up on a server silent for two keepalive periods."""
        nonce = 0
        while not wire.closed.done():
            try:
                await asyncio.wait_for(asyncio.shield(wire.closed), keepalive_s / 2)
                return
            except TimeoutError:
                pass
            now = time.monotonic()
            if now - wire.last_rx > 2 * keepalive_s:
                wire.fail(ConnectFailedError(f"server silent for {2 * keepalive_s} s"),
                          CloseCode.IDLE_TIMEOUT)
            elif now - wire.last_tx >= keepalive_s / 2:
                nonce += 1
                wire.write(wire.codec.send(Ping(nonce)))
