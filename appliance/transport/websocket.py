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
import logging
from typing import TYPE_CHECKING, Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.utilities import RemoteProtocolError

from appliance.protocol.websocket import (
    BINARY,
    NORMAL,
    PONG,
    PROTOCOL_ERROR,
    TOO_BIG,
    UNSUPPORTED_DATA,
    Data,
    PingReceived,
    ServerWebSocket,
    close_frame,
    frame,
)
from appliance.transport.wire import WireProtocol

if TYPE_CHECKING:
    from appliance.transport.server import Server

log = logging.getLogger(__name__)

SUBPROTOCOL = "tidings.v1"
#: Close codes sent back as they are; any other (a peer's own) is answered NORMAL.
_ECHO = (PROTOCOL_ERROR, UNSUPPORTED_DATA, TOO_BIG)


class WebSocketCarrier(asyncio.Protocol):
    """Between the TCP transport and a `WireProtocol`: frames out, bytes in.

    The TCP transport's protocol once the upgrade is accepted (the HTTP/1.1
    handler steps aside), and the transport of the `WireProtocol` inside: it
    implements the few transport methods `WireProtocol` uses.  wsproto checks
    and answers the opening handshake; the data phase runs on the lean
    `ServerWebSocket` codec (a few hundred bytes per idle connection).
    """

    __slots__ = ("_closed", "_codec", "_transport", "inner")

    def __init__(self, server: Server, transport: asyncio.Transport, max_message_bytes: int
                 ) -> None:
        self._transport: asyncio.Transport | None = transport
        self._codec = ServerWebSocket(max_message_bytes)
        self._closed = False
        self.inner = WireProtocol(server)

    def start(self, handshake: bytes) -> bool:
        """Answer the HTTP upgrade request (raw bytes); False if it was refused."""
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.receive_data(handshake)
            for event in ws.events():
                if isinstance(event, Request):
                    return self._accept(ws, event)
        except RemoteProtocolError as exc:
            if exc.event_hint is not None:
                self._write_tcp(ws.send(exc.event_hint))
            self._close_tcp()
            return False
        self._close_tcp()  # an upgrade request wsproto did not finish: nothing to answer
        return False

    def _accept(self, ws: WSConnection, request: Request) -> bool:
        if request.target.split("?", 1)[0] != "/v1/ws":
            self._refuse(ws, 404, b"no WebSocket endpoint here; use /v1/ws")
            return False
        if request.subprotocols and SUBPROTOCOL not in request.subprotocols:
            self._refuse(ws, 400, f"subprotocol must be {SUBPROTOCOL}".encode())
            return False
        self._write_tcp(ws.send(AcceptConnection(
            subprotocol=SUBPROTOCOL if request.subprotocols else None)))
        self.inner.connection_made(self)  # type: ignore[arg-type]  # duck-typed transport
        return True

    def _refuse(self, ws: WSConnection, status: int, body: bytes) -> None:
        self._write_tcp(ws.send(RejectConnection(status_code=status, headers=[
            (b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
            has_body=True)) + ws.send(RejectData(data=body)))
        self._close_tcp()

    # --- bytes from the client ------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        for event in self._codec.receive(data):
            if isinstance(event, Data):
                self.inner.data_received(event.payload)
            elif isinstance(event, PingReceived):
                self._write_tcp(frame(PONG, event.payload))
            else:  # Closed: by the peer, or for breaking the rules
                if event.code != NORMAL:
                    log.info("closing a WebSocket: %s (%d)", event.reason, event.code)
                self._write_tcp(close_frame(event.code if event.code in _ECHO else NORMAL,
                                            event.reason if event.code != NORMAL else ""))
                self._closed = True
                self._close_tcp()
                return

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self.inner.open:
            self.inner.connection_lost(exc)

    # --- the transport `WireProtocol` writes to ------------------------------------------

    def write(self, data: bytes) -> None:
        if not self._closed:
            self._write_tcp(frame(BINARY, data))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._write_tcp(close_frame(NORMAL))
        self._close_tcp()

    def abort(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()

    def _write_tcp(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _close_tcp(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

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
