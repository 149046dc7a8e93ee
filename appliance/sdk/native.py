"""The native protocol over one TCP (or TLS) connection, for the SDK's `Client`."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from appliance.protocol.wire import (
    Close,
    CloseCode,
    Message,
    Ping,
    Pong,
    RemoteWireError,
    Role,
    StatusReport,
    Welcome,
    WireConnection,
    encode,
)
from appliance.sdk.errors import (
    ClientConnectionError,
    ConnectFailedError,
    ServerProtocolError,
    close_error,
)
from appliance.sdk.events import CLIENT_LOGGER

if TYPE_CHECKING:
    from appliance.sdk.client import Client

log = logging.getLogger(CLIENT_LOGGER)


class NativeWire(asyncio.Protocol):
    """One TCP connection: bytes to the codec, events to the client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.codec = WireConnection(Role.CLIENT)
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.welcome: asyncio.Future[Welcome] = loop.create_future()
        self.closed: asyncio.Future[ClientConnectionError] = loop.create_future()
        self.error: ClientConnectionError | None = None
        self.online = False
        self.last_rx = self.last_tx = time.monotonic()
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance.
        self.transport = transport  # type: ignore[assignment]

    def write(self, data: bytes) -> None:
        # Frames of one loop turn leave in one write (one syscall).
        if not self._out:
            asyncio.get_running_loop().call_soon(self.flush)
        self._out.append(data)

    def flush(self) -> None:
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.send_bytes(b"".join(self._out))
            self.last_tx = time.monotonic()
        self._out.clear()

    def start(self, hello: bytes) -> None:
        """Open the conversation: the preface and HELLO."""
        self.send_bytes(hello)

    def send_bytes(self, data: bytes) -> None:
        """Put native-protocol bytes on the wire (the WebSocket carrier wraps them)."""
        if self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        try:
            events = self.codec.receive_data(data)
        except RemoteWireError as exc:
            self.fail(ServerProtocolError(f"server broke the protocol: {exc.reason}",
                                          close_code=exc.close_code), exc.close_code)
            return
        try:
            for event in events:
                self._dispatch(event)
        except Exception as exc:  # a bug of ours must cost one connection, not the app
            log.exception("handling a frame from the server failed")
            self.fail(ServerProtocolError(f"could not handle a frame from the server: {exc}"),
                      CloseCode.PROTOCOL_ERROR)

    def _dispatch(self, event: object) -> None:
        client = self.client
        kind = type(event)
        if kind is Message:
            client._on_frame_message(event)  # type: ignore[arg-type]
        elif kind is StatusReport:
            client._on_frame_status(event)  # type: ignore[arg-type]
        elif kind is Ping:
            self.write(self.codec.send(Pong(event.nonce)))  # type: ignore[attr-defined]
        elif kind is Welcome:
            if not self.welcome.done():
                self.welcome.set_result(event)  # type: ignore[arg-type]
        elif kind is Close:
            self.error = close_error(event.code, event.reason)  # type: ignore[attr-defined]
            self.abort()
        else:  # an extension frame (PROTOCOL.md §8)
            client._on_frame_extension(event)

    def fail(self, error: ClientConnectionError, code: int) -> None:
        """Close with a CLOSE frame carrying `code`, remembering `error`."""
        if self.error is None:
            self.error = error
        if self.transport is not None and not self.transport.is_closing():
            self.flush()
            # Encoded directly: the codec may already be in ERROR.
            self.send_bytes(encode(Close(code, str(error)[:200])))
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        error = self.error or ConnectFailedError(
            "connection lost" + (f": {exc}" if exc else ""))
        if not self.welcome.done():
            self.welcome.set_exception(error)
            self.welcome.exception()  # retrieved: no "never retrieved" warning
        if not self.closed.done():
            self.closed.set_result(error)
