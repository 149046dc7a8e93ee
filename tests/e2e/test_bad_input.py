"""Bad input closes that one connection with a reason; everyone else carries on."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.protocol.wire import PREFACE, Close, CloseCode, Hello, Message, Status, encode
from appliance.protocol.wire.frames import HEADER, FrameType, decode_body
from tests.support.client import Client
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    data = tmp_path / "data"
    data.mkdir()
    tokens, _ = provision(data, ["alice", "bob"])
    expired, _ = provision(data, ["old"], token_ttl_s=1)
    tokens["old"] = expired["old"]
    server = ServerProcess(data)
    server.start()
    try:
        yield server, tokens
    finally:
        assert server.stop() == 0


async def raw_close(server: ServerProcess, data: bytes) -> tuple[int, str]:
    """Send raw bytes, read until the server hangs up, return its CLOSE (code, reason)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(data)
        received = await asyncio.wait_for(reader.read(), 10)  # until EOF
    finally:
        writer.close()
        await writer.wait_closed()
    length, ftype = HEADER.unpack_from(received, 0)
    assert ftype == FrameType.CLOSE, received
    close = decode_body(ftype, received[HEADER.size:HEADER.size + length])
    return close.code, close.reason  # type: ignore[union-attr]


async def still_works(server: ServerProcess, tokens: dict[str, str], msg_id: int) -> None:
    alice = await Client.connect(server.host, server.port, tokens["alice"], "a")
    bob = await Client.connect(server.host, server.port, tokens["bob"], "b")
    try:
        alice.send(Message(msg_id, b"bob", b"still fine"))
        assert (await alice.status()).status == Status.SENT
        assert (await bob.message()).payload == b"still fine"
    finally:
        await alice.close()
        await bob.close()


def test_each_kind_of_bad_input_closes_only_its_connection(
        live: tuple[ServerProcess, dict[str, str]]) -> None:
    server, tokens = live

    async def go() -> None:
        # A well-behaved pair stays connected across all the abuse below.
        alice = await Client.connect(server.host, server.port, tokens["alice"], "steady")
        bob = await Client.connect(server.host, server.port, tokens["bob"], "steady")
        cases = [
            (b"hello\r\n", CloseCode.HELLO_REQUIRED, "preface"),  # HTTP: tests/transport
            (b"\x00\xff" * 40, CloseCode.HELLO_REQUIRED, "preface"),
            (PREFACE + struct.pack(">IB", 2**31, FrameType.MESSAGE), CloseCode.FRAME_TOO_LARGE,
             "exceeds"),
            (PREFACE + encode(Message(1, b"bob", b"early")), CloseCode.HELLO_REQUIRED,
             "before HELLO"),
            (PREFACE[:-1] + b"\x09", CloseCode.UNSUPPORTED_VERSION, "version"),
            (PREFACE + encode(Hello(b"tdg_not-a-token", b"dev")), CloseCode.AUTH_FAILED,
             "unknown access token"),
            (PREFACE + encode(Hello(tokens["old"].encode(), b"dev")), CloseCode.TOKEN_EXPIRED,
             "expired"),
            (PREFACE + struct.pack(">IB", 3, 0x7F) + b"abc", CloseCode.HELLO_REQUIRED,
             "unknown frame type"),
        ]
        for i, (data, code, words) in enumerate(cases):
            got_code, reason = await raw_close(server, data)
            assert (got_code, words in reason) == (code, True), (i, got_code, reason)
            alice.send(Message(100 + i, b"bob", b"between"))
            assert (await alice.status()).status == Status.SENT
            assert (await bob.message()).id == 100 + i
            assert (await alice.status()).status == Status.DELIVERED
        await alice.close()
        await bob.close()
        await still_works(server, tokens, 999)

    # The expired token must be past its one-second lifetime before we use it.
    asyncio.run(asyncio.sleep(1.1))
    asyncio.run(go())


def test_malformed_frame_after_hello_closes_with_protocol_error(
        live: tuple[ServerProcess, dict[str, str]]) -> None:
    server, tokens = live

    async def go() -> None:
        client = await Client.connect(server.host, server.port, tokens["alice"], "x")
        client.send_raw(struct.pack(">IB", 4, FrameType.MESSAGE) + b"\x00" * 4)
        closed = await client.closed_by_server()
        assert closed.code == CloseCode.PROTOCOL_ERROR
        assert "MESSAGE" in closed.reason
        await client.close()
        await still_works(server, tokens, 1)

    asyncio.run(go())


def test_a_connection_closed_during_its_hello_leaves_no_session_behind(
        live: tuple[ServerProcess, dict[str, str]]) -> None:
    server, tokens = live

    async def go() -> None:
        for i in range(10):  # more than the 8 devices a user may have connected
            reader, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(PREFACE + encode(Hello(tokens["bob"].encode(), f"gone{i}".encode()))
                         + encode(Close(CloseCode.NORMAL, "bye")))
            await asyncio.wait_for(reader.read(), 10)
            writer.close()
            await writer.wait_closed()
        alice = await Client.connect(server.host, server.port, tokens["alice"], "a")
        alice.send(Message(1, b"bob", b"anyone?", expiry_s=0))
        assert (await alice.status()).status == Status.USER_OFFLINE
        bob = await Client.connect(server.host, server.port, tokens["bob"], "ninth")
        assert bob.welcome is not None
        await alice.close()
        await bob.close()

    asyncio.run(go())
