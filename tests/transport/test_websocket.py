"""The native protocol inside WebSocket, with the `websockets` package as the client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from appliance.protocol.wire import (
    Ack,
    Hello,
    Message,
    ReportAck,
    Role,
    Status,
    StatusReport,
    Welcome,
    WireConnection,
)
from tests.support.client import Client
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


class WsClient:
    """A native-protocol client whose bytes travel in WebSocket binary messages."""

    def __init__(self, ws, codec: WireConnection) -> None:  # type: ignore[no-untyped-def]
        self.ws = ws
        self.codec = codec
        self.events: list[object] = []

    @classmethod
    async def connect(cls, url: str, token: str, device: str) -> WsClient:
        ws = await connect(url, subprotocols=["tidings.v1"], max_size=None)  # type: ignore[list-item]
        client = cls(ws, WireConnection(Role.CLIENT))
        await ws.send(client.codec.send(Hello(token.encode(), device.encode())))
        assert isinstance(await client.next(), Welcome)
        return client

    async def next(self) -> object:
        while not self.events:
            async with asyncio.timeout(10):
                self.events.extend(self.codec.receive_data(await self.ws.recv()))
        return self.events.pop(0)

    async def send(self, event: object) -> None:
        await self.ws.send(self.codec.send(event))  # type: ignore[arg-type]


@pytest.fixture
def world(data_dir: Path):  # type: ignore[no-untyped-def]
    tokens, _ = provision(data_dir, ["alice", "bob"])
    server = ServerProcess(data_dir)
    server.start()
    yield server, tokens
    server.stop()


def test_websocket_and_native_clients_exchange_messages(world) -> None:  # type: ignore[no-untyped-def]
    server, tokens = world

    async def go() -> None:
        url = f"ws://{server.host}:{server.port}/v1/ws"
        alice = await WsClient.connect(url, tokens["alice"], "browser")
        assert alice.ws.subprotocol == "tidings.v1"
        bob = await Client.connect(server.host, server.port, tokens["bob"], "native")
        await alice.send(Message(7, b"bob", b"from a browser"))
        sent = await alice.next()
        assert isinstance(sent, StatusReport)
        assert (sent.id, sent.status) == (7, Status.SENT)
        got = await bob.message()  # acknowledges it
        assert (got.peer, got.payload) == (b"alice", b"from a browser")
        delivered = await alice.next()
        assert isinstance(delivered, StatusReport)
        assert delivered.status == Status.DELIVERED
        await alice.send(ReportAck(delivered.report_seq))

        bob.send(Message(8, b"alice", b"from a native client"))
        incoming = await alice.next()
        assert isinstance(incoming, Message)
        assert (incoming.peer, incoming.payload) == (b"bob", b"from a native client")
        await alice.send(Ack((incoming.seq,)))
        assert (await bob.status()).status == Status.SENT
        assert (await bob.status()).status == Status.DELIVERED
        await alice.ws.close()
        await bob.close()

    asyncio.run(go())


def test_websocket_refusals(world) -> None:  # type: ignore[no-untyped-def]
    server, tokens = world

    async def go() -> None:
        base = f"ws://{server.host}:{server.port}"
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{base}/elsewhere")
        assert refused.value.response.status_code == 404
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{base}/v1/ws", subprotocols=["mqtt"])  # type: ignore[list-item]
        assert refused.value.response.status_code == 400

        # A message above the limit closes that WebSocket with 1009 ...
        big = await connect(f"{base}/v1/ws", max_size=None)
        async def send_big() -> None:
            async with asyncio.timeout(10):
                # The close can arrive while the 2 MiB are still going out:
                # then send() is what reports it.
                await big.send(b"\x89" + bytes(2 * 1024 * 1024))
                await big.recv()

        with pytest.raises(ConnectionClosed) as closed:
            await send_big()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
        # ... text is refused with 1003, and a native client carries on.
        text = await connect(f"{base}/v1/ws")
        await text.send("hello")
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                await text.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1003
        alice = await WsClient.connect(f"{base}/v1/ws", tokens["alice"], "b2")
        await alice.send(Message(9, b"bob", b"fine"))
        status = await alice.next()
        assert isinstance(status, StatusReport)
        assert status.status == Status.SENT
        await alice.ws.close()

    asyncio.run(go())


def _client_frame(payload: bytes) -> bytes:
    """One masked binary frame (RFC 6455 §5.2), as a browser sends it."""
    mask = b"\x01\x02\x03\x04"
    size = len(payload)
    head = bytes([0x82, 0x80 | size]) if size < 126 else bytes([0x82, 0xFE]) + size.to_bytes(2)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_a_frame_sent_with_the_upgrade_request_is_not_lost(world) -> None:  # type: ignore[no-untyped-def]
    """A client may send its first frame right behind the upgrade request, before the
    101 (RFC 6455 §4.1 lets it once the handshake is sent; some clients do, and one
    TCP segment then carries both): the HELLO in it is answered."""
    server, tokens = world

    async def go() -> None:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        codec = WireConnection(Role.CLIENT)
        hello = codec.send(Hello(tokens["alice"].encode(), b"eager"))
        writer.write(b"GET /v1/ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tidings.v1\r\n\r\n"
                     + _client_frame(hello))
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            first, size = await reader.readexactly(2)
            assert first == 0x82
            if size == 126:
                size = int.from_bytes(await reader.readexactly(2))
            events = codec.receive_data(await reader.readexactly(size))
        assert isinstance(events[0], Welcome), events
        writer.close()

    asyncio.run(go())
