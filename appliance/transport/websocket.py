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
from appliance.protocol.wire import PREFACE
from appliance.protocol.wire.frames import HEADER_SIZE, MAX_PRE_OPEN_FRAME_BYTES
from appliance.transport.carrier import Carrier
from appliance.transport.host import Host
from appliance.transport.wire import WireProtocol

log = logging.getLogger(__name__)

SUBPROTOCOL = "tidings.v1"
#: The largest message before WELCOME: the preface, a HELLO or a CLOSE, with headers.
_PRE_OPEN_MESSAGE_BYTES = len(PREFACE) + 2 * (HEADER_SIZE + MAX_PRE_OPEN_FRAME_BYTES)
#: Close codes sent back as they are; any other (a peer's own) is answered NORMAL.
_ECHO = (PROTOCOL_ERROR, UNSUPPORTED_DATA, TOO_BIG)


class WebSocketCarrier(Carrier):
    """Between the TCP transport and a `WireProtocol`: frames out, bytes in.

    The TCP transport's protocol once the upgrade is accepted (the HTTP/1.1
    handler steps aside), and the transport of the `WireProtocol` inside.
    wsproto checks and answers the opening handshake; the data phase runs on
    the lean `ServerWebSocket` codec (a few hundred bytes per idle connection).
    The inner `WireProtocol` applies every native bound (handshake deadline,
    slow consumer), since this carrier forwards the TCP transport's flow
    signals to it.
    """

    __slots__ = ("_closed", "_codec", "_open_max")
    #: How `WireProtocol.over_websocket` tells (the status report counts by protocol).
    is_websocket = True

    inner: WireProtocol

    def __init__(self, host: Host, transport: asyncio.Transport, max_message_bytes: int
                 ) -> None:
        super().__init__(transport)
        # Until the session inside is authenticated a message carries the
        # preface and a HELLO at most: that is all a stranger may make us buffer.
        self._open_max = max_message_bytes
        self._codec = ServerWebSocket(_PRE_OPEN_MESSAGE_BYTES)
        self._closed = False
        self.inner = WireProtocol(host)

    def start(self, handshake: bytes, early: bytes = b"") -> bool:
        """Answer the HTTP upgrade request (raw bytes); False if it was refused.

        `early`: what the client sent behind the request, before our answer (its
        first frames); read once the connection is open, under the same bounds.
        """
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.receive_data(handshake)
            for event in ws.events():
                if isinstance(event, Request):
                    accepted = self._accept(ws, event)
                    if accepted and early:
                        self.data_received(early)
                    return accepted
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
        codec = self._codec
        if codec.max_message_bytes != self._open_max and self.inner.authenticated:
            codec.max_message_bytes = self._open_max
        for event in codec.receive(data):
            if isinstance(event, Data):
                self.inner.data_received(event.payload)
            elif isinstance(event, PingReceived):
                # A peer that does not read gets no PONG (RFC 6455 §5.5.3 lets
                # an endpoint answer only the latest PING): its PINGs must not
                # grow our buffer.
                if not self.output_backed_up:
                    self._write_tcp(frame(PONG, event.payload))
            else:  # Closed: by the peer, or for breaking the rules
                if event.code != NORMAL:
                    log.info("closing a WebSocket: %s (%d)", event.reason, event.code)
                self._write_tcp(close_frame(event.code if event.code in _ECHO else NORMAL,
                                            event.reason if event.code != NORMAL else ""))
                self._closed = True
                self._close_tcp()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self._tcp = None
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
