"""A minimal asyncio client over the sans-I/O codec, for tests and benchmarks.

Not the SDK (that is issue #3): it exposes frames as they come so tests can
assert on exactly what the server sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field

from appliance.protocol.wire import (
    Ack,
    Close,
    Event,
    Hello,
    Message,
    Ping,
    Pong,
    ReadReport,
    RemoteWireError,
    ReportAck,
    Role,
    StatusReport,
    Welcome,
    WireConnection,
)


class ServerClosedError(Exception):
    """The server sent CLOSE (or hung up); `code` and `reason` say why."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed by server: {code} {reason}")
        self.code = code
        self.reason = reason


@dataclass
class Client:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    codec: WireConnection = field(default_factory=lambda: WireConnection(Role.CLIENT))
    queue: list[Event] = field(default_factory=list)
    welcome: Welcome | None = None
    closed: Close | None = None

    @classmethod
    async def connect(cls, host: str, port: int, token: str | bytes, device: str = "dev1",
                      *, expect_welcome: bool = True, tls: ssl.SSLContext | None = None,
                      server_hostname: str | None = None, client_flags: int = 0) -> Client:
        reader, writer = await asyncio.open_connection(host, port, ssl=tls,
                                                       server_hostname=server_hostname)
        client = cls(reader, writer)
        tok = token.encode() if isinstance(token, str) else token
        client.send(Hello(token=tok, device_id=device.encode(), client_flags=client_flags))
        if expect_welcome:
            try:
                event = await client.next_event()
            except BaseException:
                await client.close()
                raise
            if not isinstance(event, Welcome):
                await client.close()
                raise AssertionError(f"expected WELCOME, got {event!r}")
            client.welcome = event
        return client

    def send(self, event: Event) -> None:
        self.writer.write(self.codec.send(event))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def next_event(self, timeout: float = 10.0) -> Event:
        async with asyncio.timeout(timeout):
            while not self.queue:
                data = await self.reader.read(65536)
                if not data:
                    raise ServerClosedError(self.closed.code if self.closed else None,
                                         self.closed.reason if self.closed else "EOF")
                try:
                    events = self.codec.receive_data(data)
                except RemoteWireError as exc:
                    raise AssertionError(f"server sent bad bytes: {exc}") from exc
                for ev in events:
                    if isinstance(ev, Ping):
                        self.send(Pong(ev.nonce))
                    elif isinstance(ev, Close):
                        self.closed = ev
                    else:
                        self.queue.append(ev)
        return self.queue.pop(0)

    async def expect(self, kind: type, timeout: float = 10.0) -> Event:
        ev = await self.next_event(timeout)
        assert isinstance(ev, kind), f"expected {kind.__name__}, got {ev!r}"
        return ev

    async def status(self, timeout: float = 10.0) -> StatusReport:
        ev = await self.expect(StatusReport, timeout)
        assert isinstance(ev, StatusReport)
        return ev

    async def message(self, timeout: float = 10.0, *, ack: bool = True) -> Message:
        ev = await self.expect(Message, timeout)
        assert isinstance(ev, Message)
        if ack and ev.seq:
            self.send(Ack((ev.seq,)))
        return ev

    async def closed_by_server(self, timeout: float = 10.0) -> ServerClosedError:
        try:
            while True:
                await self.next_event(timeout)
        except ServerClosedError as exc:
            return exc

    def read(self, peer: bytes, ids: tuple[int, ...], group_id: int = 0) -> None:
        self.send(ReadReport(peer=peer, group_id=group_id, ids=ids))

    def report_ack(self, seq: int) -> None:
        self.send(ReportAck(seq))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
