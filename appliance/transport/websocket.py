"""The native protocol carried in WebSocket binary messages (SPEC M12).

A browser cannot open a raw TCP socket, so it opens ``/v1/ws`` (subprotocol
``tidings.v1``) and sends exactly the bytes a native client would, preface
included, in binary messages; the server answers with native frames, one or
more per binary message.  Message boundaries carry no meaning: the payloads
form one byte stream, so the codec, the engine session and every timeout are
those of a native connection (`WireProtocol`), which sees this class as its
transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from appliance.transport.wire import WireProtocol

if TYPE_CHECKING:
    from appliance.transport.server import Server

log = logging.getLogger(__name__)

SUBPROTOCOL = "tidings.v1"
# RFC 6455 §7.4.1 close codes.
_POLICY_VIOLATION, _UNSUPPORTED_DATA, _TOO_BIG, _NORMAL = 1008, 1003, 1009, 1000


class WebSocketCarrier(asyncio.Protocol):
    """Between the TCP transport and a `WireProtocol`: frames out, bytes in.

    The TCP transport's protocol once the upgrade is accepted (the HTTP/1.1
    handler steps aside), and the transport of the `WireProtocol` inside: it
    implements the few transport methods `WireProtocol` uses.
    """

    __slots__ = ("_partial", "_transport", "_ws", "inner", "max_message_bytes")
    #: (An int attribute per connection would cost 32 bytes; most share the default.)

    def __init__(self, server: Server, transport: asyncio.Transport, max_message_bytes: int
                 ) -> None:
        self._transport: asyncio.Transport | None = transport
        self._ws = WSConnection(ConnectionType.SERVER)
        self._partial: bytearray | None = None
        self.max_message_bytes = max_message_bytes
        self.inner = WireProtocol(server)

    def start(self, handshake: bytes) -> bool:
        """Feed the HTTP upgrade request (raw bytes); False if it was refused."""
        return self._receive(handshake)

    # --- bytes from the client ------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._receive(data)

    def _receive(self, data: bytes) -> bool:
        ws = self._ws
        try:
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, BytesMessage):
                    # A message is passed on whole, so the size limit is applied
                    # before the codec acts on any of it.
                    if self._partial is None:
                        if event.message_finished:
                            self.inner.data_received(bytes(event.data))
                            continue
                        self._partial = bytearray()
                    self._partial += event.data
                    if len(self._partial) > self.max_message_bytes:
                        self._partial = None
                        self._fail(_TOO_BIG, f"message above {self.max_message_bytes} bytes")
                        return False
                    if event.message_finished:
                        data, self._partial = bytes(self._partial), None
                        self.inner.data_received(data)
                elif isinstance(event, Request):
                    if not self._accept(event):
                        return False
                elif isinstance(event, Ping):
                    self._send(event.response())
                elif isinstance(event, CloseConnection):
                    if ws.state is ConnectionState.REMOTE_CLOSING:
                        self._send(event.response())
                    self._close_tcp()
                    return True
                elif isinstance(event, TextMessage):
                    self._fail(_UNSUPPORTED_DATA, "binary messages only")
                    return False
        except RemoteProtocolError as exc:
            # A bad handshake gets its HTTP answer from wsproto; a bad frame a close.
            if exc.event_hint is not None:
                self._send(exc.event_hint)
            self._close_tcp()
            return False
        return True

    def _accept(self, request: Request) -> bool:
        if request.target.split("?", 1)[0] != "/v1/ws":
            self._refuse(404, b"no WebSocket endpoint here; use /v1/ws")
            return False
        if request.subprotocols and SUBPROTOCOL not in request.subprotocols:
            self._refuse(400, f"subprotocol must be {SUBPROTOCOL}".encode())
            return False
        self._send(AcceptConnection(
            subprotocol=SUBPROTOCOL if request.subprotocols else None))
        # From here on only the frame layer is needed: dropping wsproto's
        # handshake object (which holds an h11 connection) saves ~2 KB per
        # idle WebSocket.  `Connection` has the same receive/events/send/state.
        if self._ws.connection is not None:
            self._ws = self._ws.connection  # type: ignore[assignment]
        self.inner.connection_made(self)  # type: ignore[arg-type]  # duck-typed transport
        return True

    def _refuse(self, status: int, body: bytes) -> None:
        self._send(RejectConnection(status_code=status, headers=[
            (b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
            has_body=True))
        self._send(RejectData(data=body))
        self._close_tcp()

    def _fail(self, code: int, reason: str) -> None:
        log.info("closing a WebSocket: %s", reason)
        self._send(CloseConnection(code=code, reason=reason))
        self._close_tcp()

    def _send(self, event: Any) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        # LocalProtocolError: the connection is already closing, nothing more to say.
        with contextlib.suppress(LocalProtocolError):
            transport.write(self._ws.send(event))

    def _close_tcp(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self.inner.open:
            self.inner.connection_lost(exc)

    # --- the transport `WireProtocol` writes to ------------------------------------------

    def write(self, data: bytes) -> None:
        self._send(BytesMessage(data=data))

    def close(self) -> None:
        if self._ws.state is ConnectionState.OPEN:
            self._send(CloseConnection(code=_NORMAL))
        self._close_tcp()

    def abort(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()

    def is_closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def is_reading(self) -> bool:
        return self._transport is not None and self._transport.is_reading()

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default if self._transport is None else self._transport.get_extra_info(name,
                                                                                      default)
