"""The SDK's HTTP/1.1 client against servers that misbehave (stand-ins on 127.0.0.1:0).

Whatever a server does (huge heads, bodies cut short, silence, answers before
the body), the client ends with a typed error within its deadlines, holds a
bounded amount, and leaks no library exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from appliance.sdk import FileTransferError, TransferInterruptedError
from appliance.sdk.http import MAX_DOCUMENT_BYTES, Endpoint, HttpConnection

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Stand:
    """A TCP server running `handler` per connection; records what clients sent."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.received = bytearray()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Endpoint:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except OSError:
                pass
            finally:
                writer.transport.abort()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return Endpoint("127.0.0.1", port, b"token", io_timeout_s=1.0, connect_timeout_s=2.0)

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def _head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def _run(coro: Awaitable[None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(30):
            await coro
    asyncio.run(bounded())


def test_keep_alive_reuses_one_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            head = await _head(reader)
            assert b"authorization: Bearer token" in head.lower().replace(b"bearer", b"Bearer")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async def run() -> None:
        stand = Stand(handler)
        async with stand as endpoint:
            conn = await HttpConnection.open(endpoint)
            for _ in range(2):
                response = await conn.request("GET", "/v1/files/x/meta")
                assert response.status == 200
                assert await conn.document() == b"ok"
                assert conn.reusable
            conn.close()
        assert stand.connections == 1

    _run(run())


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",  # a head past the bound
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",  # cut short
    b"garbage\r\n\r\n",
    b"",  # closed at once
])
def test_broken_answers_are_interruptions(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(answer)
        await writer.drain()

    async def run() -> None:
        async with Stand(handler) as endpoint:
            conn = await HttpConnection.open(endpoint)

            async def exchange() -> None:
                await conn.request("GET", "/v1/files/x")
                await conn.document()

            with pytest.raises(TransferInterruptedError):
                await exchange()
            assert not conn.reusable

    _run(run())


def test_a_silent_server_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        await asyncio.sleep(10)  # never answers

    async def run() -> None:
        async with Stand(handler) as endpoint:
            conn = await HttpConnection.open(endpoint)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TransferInterruptedError):
                await conn.request("GET", "/v1/files/x")
            assert loop.time() - started < 3  # io_timeout_s 1.0

    _run(run())


def test_a_large_document_is_cut_at_its_bound() -> None:
    size = 10 * MAX_DOCUMENT_BYTES

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        writer.write(b"x" * size)
        await writer.drain()

    async def run() -> None:
        async with Stand(handler) as endpoint:
            conn = await HttpConnection.open(endpoint)
            await conn.request("GET", "/v1/files/x/meta")
            assert len(await conn.document()) == MAX_DOCUMENT_BYTES
            assert not conn.reusable  # the rest was not read: closed

    _run(run())


def test_an_answer_before_the_body_stops_the_body() -> None:
    """``Expect: 100-continue``: a 409 before the body means the body is never sent."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _head(reader)
        assert b"expect: 100-continue" in head.lower()
        writer.write(b"HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        stand.received += await reader.read(65536)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"x" * 1000

    async def run() -> None:
        async with stand as endpoint:
            conn = await HttpConnection.open(endpoint)
            response = await conn.request("PATCH", "/v1/uploads/x", chunks=chunks(),
                                          length=1000, expect_continue=True)
            assert response.status == 409
            assert not conn.reusable
            conn.close()

    stand = Stand(handler)
    _run(run())
    assert stand.received == b""


def test_unreachable_and_a_body_of_the_wrong_length_are_typed() -> None:
    async def run() -> None:
        async with Stand(lambda r, w: _head(r)) as endpoint:
            pass  # closed: nothing listens there now
        with pytest.raises(TransferInterruptedError):
            await HttpConnection.open(endpoint)

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()

        async def short() -> AsyncIterator[bytes]:
            yield b"abc"

        async with Stand(handler) as endpoint:
            conn = await HttpConnection.open(endpoint)
            with pytest.raises(FileTransferError):
                await conn.request("PATCH", "/v1/uploads/x", chunks=short(), length=10)

    _run(run())
