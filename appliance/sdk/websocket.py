"""The SDK's connection inside WebSocket (``/v1/ws``, subprotocol ``tidings.v1``).

Optional: needs wsproto (the ``websocket`` extra of tidings-sdk), pure Python.
The native byte stream travels in binary messages, exactly as from a browser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from appliance.protocol.wire import CloseCode
from appliance.sdk.errors import ConnectFailedError, ServerProtocolError
from appliance.sdk.native import NativeWire

if TYPE_CHECKING:
    from appliance.sdk.client import Client

PATH = "/v1/ws"
SUBPROTOCOL = "tidings.v1"


class WebSocketWire(NativeWire):
    """`NativeWire` with a WebSocket layer between it and the TCP (or TLS) transport."""

    def __init__(self, client: Client, host: str) -> None:
        super().__init__(client)
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._host = host
        self._accepted = False
        self._pending: list[bytes] = []

    def start(self, hello: bytes) -> None:
        self._pending.append(hello)  # sent once the server accepts the upgrade
        if self.transport is not None:
            self.transport.write(self._ws.send(Request(host=self._host, target=PATH,
                                                       subprotocols=[SUBPROTOCOL])))

    def send_bytes(self, data: bytes) -> None:
        if not self._accepted:
            self._pending.append(data)
        elif self.transport is not None:
            self.transport.write(self._ws.send(BytesMessage(data=data)))

    def data_received(self, data: bytes) -> None:
        try:
            self._ws.receive_data(data)
            for event in self._ws.events():
                if isinstance(event, BytesMessage):
                    super().data_received(bytes(event.data))
                elif isinstance(event, AcceptConnection):
                    self._accepted = True
                    pending, self._pending = self._pending, []
                    for chunk in pending:
                        self.send_bytes(chunk)
                elif isinstance(event, RejectConnection):
                    self.error = ConnectFailedError(
                        f"the server refused the WebSocket upgrade ({event.status_code})")
                    self.abort()
                elif isinstance(event, Ping):
                    if self.transport is not None:
                        self.transport.write(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if self.error is None:
                        self.error = ConnectFailedError(
                            f"WebSocket closed by the server ({event.code} {event.reason})")
                    self.abort()
                elif isinstance(event, TextMessage):
                    self.fail(ServerProtocolError("text message on a binary WebSocket"),
                              CloseCode.PROTOCOL_ERROR)
        except RemoteProtocolError as exc:
            self.error = ServerProtocolError(f"server broke the WebSocket protocol: {exc}")
            self.abort()
