"""A server that breaks the protocol yields typed errors and reconnects, never a hang."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from appliance.protocol.wire import Close, CloseCode, Welcome, encode
from appliance.sdk import (
    AuthenticationError,
    Backoff,
    Client,
    ClientConnectionError,
    ConnectFailedError,
    ConnectionEvent,
    ConnectionState,
    HandshakeTimeoutError,
    ServerClosedError,
    ServerProtocolError,
    TokenExpiredError,
)

WELCOME = encode(Welcome(b"alice", 1_700_000_000_000, 30, 66048, b"fake"))
Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(100)
    writer.write(b"\x00\x00\x00\x03\x7fxyz")  # frame type 0x7f does not exist


async def mid_frame(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(100)
    writer.write(WELCOME[:9])  # the header promises more than ever comes
    await writer.drain()
    writer.close()  # ... and the server hangs up


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # reads HELLO and then waits for the client to give up


async def oversize(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(100)
    writer.write(b"\x7f\xff\xff\xff\x02")  # a 2 GiB frame


async def welcome_then_garbage(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
    await reader.read(100)
    writer.write(WELCOME)
    await reader.read(100)  # the client's outbox, sent once it is online
    writer.write(b"\x00\x00\x00\x01\x12\x00")  # a STATUS frame far too short


def closing(code: int) -> Behaviour:
    async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(encode(Close(code, "go away")))
    return behave


class FakeServer:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.behaviour(reader, writer)
            if not writer.is_closing():
                await writer.drain()
                await reader.read()  # until the client hangs up
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def _run(behaviour: Behaviour, until: Callable[[list[ConnectionEvent]], bool]
         ) -> tuple[list[ConnectionEvent], int, list[dict[str, Any]]]:
    async def main() -> tuple[list[ConnectionEvent], int, list[dict[str, Any]]]:
        problems: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: problems.append(ctx))
        fake = FakeServer(behaviour)
        events: list[ConnectionEvent] = []
        async with fake as port:
            client = Client("127.0.0.1", port, "tok", connect_timeout_s=0.3,
                            backoff=Backoff(0.01, 0.05, 0.005))
            changed = asyncio.Event()

            def record(event: ConnectionEvent) -> None:
                events.append(event)
                changed.set()

            client.on_connection(record)
            await client.start()
            client.send("bob", "waits in the outbox")
            async with asyncio.timeout(20):
                while not until(events):
                    changed.clear()
                    await changed.wait()
            async with asyncio.timeout(5):  # closing never hangs either
                await client.close()
        return events, fake.connections, problems

    return asyncio.run(main())


def _errors(events: list[ConnectionEvent]) -> list[ClientConnectionError]:
    return [e.error for e in events if e.error is not None]


def _offline(count: int) -> Callable[[list[ConnectionEvent]], bool]:
    return lambda events: sum(e.state is ConnectionState.OFFLINE for e in events) >= count


@pytest.mark.parametrize(("behaviour", "error", "close_code"), [
    (garbage, ServerProtocolError, CloseCode.PROTOCOL_ERROR),
    (oversize, ServerProtocolError, CloseCode.FRAME_TOO_LARGE),
    (mid_frame, ConnectFailedError, None),
    (silent, HandshakeTimeoutError, None),
    (closing(CloseCode.GOING_AWAY), ServerClosedError, CloseCode.GOING_AWAY),
])
def test_retryable_failures_are_typed_and_retried(behaviour: Behaviour,
                                                  error: type[ClientConnectionError],
                                                  close_code: int | None) -> None:
    events, connections, problems = _run(behaviour, _offline(3))
    errors = _errors(events)
    assert errors
    assert all(type(e) is error for e in errors), errors
    assert all(e.retryable and e.close_code == close_code for e in errors)
    assert connections >= 3  # it kept trying, with backoff
    assert [e.retry_in_s is not None for e in events if e.state is ConnectionState.OFFLINE]
    assert problems == []  # no unhandled exception anywhere


@pytest.mark.parametrize("seed", range(12))
def test_random_bytes_after_welcome_never_escape_as_anything_untyped(seed: int) -> None:
    noise = random.Random(seed).randbytes(random.Random(seed).randint(1, 300))

    async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(WELCOME)
        await reader.read(100)  # the client's outbox
        writer.write(noise)
        await writer.drain()
        writer.close()  # whatever the bytes were, the server then hangs up

    events, connections, problems = _run(behave, _offline(2))
    errors = _errors(events)
    assert errors
    assert all(isinstance(e, ServerProtocolError | ConnectFailedError) for e in errors), errors
    assert connections >= 2
    assert problems == []


def test_garbage_after_welcome_drops_back_offline_and_reconnects() -> None:
    events, connections, problems = _run(welcome_then_garbage, _offline(2))
    states = [e.state for e in events]
    assert states[:3] == [ConnectionState.CONNECTING, ConnectionState.ONLINE,
                          ConnectionState.OFFLINE]
    assert isinstance(events[2].error, ServerProtocolError)
    assert connections >= 2
    assert problems == []


@pytest.mark.parametrize(("code", "error"), [(CloseCode.AUTH_FAILED, AuthenticationError),
                                             (CloseCode.TOKEN_EXPIRED, TokenExpiredError)])
def test_refused_credentials_stop_without_retrying(code: int,
                                                   error: type[ClientConnectionError]) -> None:
    events, connections, problems = _run(
        closing(code), lambda ev: any(e.state is ConnectionState.STOPPED for e in ev))
    stopped = next(e for e in events if e.state is ConnectionState.STOPPED)
    assert type(stopped.error) is error
    assert not stopped.error.retryable
    assert "go away" in str(stopped.error)
    assert connections == 1
    assert problems == []


def test_wait_online_raises_the_refusal() -> None:
    async def main() -> None:
        async with FakeServer(closing(CloseCode.AUTH_FAILED)) as port, \
                Client("127.0.0.1", port, "tok") as client:
            with pytest.raises(AuthenticationError, match="AUTH_FAILED"):
                async with asyncio.timeout(10):
                    await client.wait_online()
    asyncio.run(main())
