"""Nothing is buffered for a peer that has not authenticated beyond a small, fixed size.

Found by an attack after the edge landed: 480 WebSocket connections (60 from
each of 8 addresses, under every per-address cap) that declared a 264 KiB
message before HELLO and held back its last byte took +105 MiB (+190 MiB inside
TLS); native connections declaring a 64 KB HELLO took +29 MiB.  Before WELCOME
a server now takes a HELLO or a CLOSE of at most `MAX_PRE_OPEN_FRAME_BYTES`,
whatever carries it: larger is FRAME_TOO_LARGE (native) or 1009 (WebSocket).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.protocol.wire import PREFACE
from appliance.protocol.wire.frames import HEADER, MAX_PRE_OPEN_FRAME_BYTES, FrameType
from tests.support.hostile import (
    HONEST_APP,
    HONEST_USERS,
    RSS_BUDGET_BYTES,
    HonestPair,
    RssWatch,
)
from tests.support.provision import provision
from tests.support.server import ServerProcess
from tests.transport.hostile_peers import WS_UPGRADE, wait_closed

pytestmark = pytest.mark.slow

SOURCES = [f"127.0.0.{n}" for n in range(2, 6)]  # not exempt from the per-address caps
PER_SOURCE = 60  # under the default 64 handshakes per address
MIB = 1024 * 1024


@pytest.fixture
def world(data_dir: Path) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    tokens, _ = provision(data_dir, HONEST_USERS, app=HONEST_APP)
    server = ServerProcess(data_dir)
    server.start()
    try:
        yield server, tokens
    finally:
        server.stop()


def _native_big_hello() -> bytes:
    """A HELLO declaring 60 kB of body, all but its last byte sent."""
    return PREFACE + HEADER.pack(60_000, FrameType.HELLO) + b"h" * 59_999


def _websocket_big_message() -> bytes:
    """A masked binary frame declaring 260 kB (a 64-bit length), 200 kB of it sent."""
    return bytes([0x82, 0x80 | 127]) + struct.pack(">Q", 260_000) + b"\0" * 4 + b"w" * 200_000


def _open(server: ServerProcess, source: str, websocket: bool) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect((server.host, server.port))
    if websocket:
        sock.sendall(WS_UPGRADE)
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    with contextlib.suppress(OSError):  # refused while we still write: that is the point
        sock.sendall(_websocket_big_message() if websocket else _native_big_hello())
    return sock


@pytest.mark.parametrize("websocket", [False, True], ids=["native", "websocket"])
def test_a_stranger_cannot_make_the_server_buffer_a_big_frame(world, websocket: bool  # type: ignore[no-untyped-def]
                                                              ) -> None:
    server, tokens = world
    assert server.proc is not None
    assert MAX_PRE_OPEN_FRAME_BYTES < 60_000

    socks: list[socket.socket] = []

    async def go() -> RssWatch:
        with RssWatch(server.proc.pid) as rss:  # type: ignore[union-attr]
            # The strangers connect first (this process's own threads would
            # otherwise time the honest pair too), then hold on while it talks.
            socks.extend(await asyncio.gather(*(
                asyncio.to_thread(_open, server, source, websocket)
                for source in SOURCES for _ in range(PER_SOURCE))))
            async with HonestPair(server, tokens) as honest:
                await asyncio.sleep(1)
        honest.assert_healthy()
        return rss

    try:
        rss = asyncio.run(go())
        print(f"\n{len(socks)} strangers, {rss}")
        # Refused at the frame's header, not buffered until the handshake deadline.
        assert all(wait_closed(sock, 5) is not None for sock in socks)
        assert rss.growth < 8 * MIB, rss
    finally:
        for sock in socks:
            sock.close()


def _held_http1_body(server: ServerProcess, source: str) -> socket.socket:
    """A POST declaring a 1 MB body, all of it but the last byte sent, never finished."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect((server.host, server.port))
    sock.sendall(b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000000\r\n\r\n")
    sock.setblocking(False)  # send what the server takes; it stops reading at its budget
    with contextlib.suppress(OSError):
        sock.send(b"x" * 999_999)
    return sock


def test_held_http1_bodies_stop_at_the_server_budget(world) -> None:  # type: ignore[no-untyped-def]
    # 240 strangers each holding a 1 MB body open took +260 MiB: HTTP/1.1 bodies
    # in flight now count against the server's budget (16 MiB by default, shared
    # with HTTP/2), and a connection past it is not read from.
    server, tokens = world
    assert server.proc is not None

    socks: list[socket.socket] = []

    async def go() -> RssWatch:
        with RssWatch(server.proc.pid) as rss:  # type: ignore[union-attr]
            socks.extend(await asyncio.gather(*(
                asyncio.to_thread(_held_http1_body, server, source)
                for source in SOURCES for _ in range(PER_SOURCE))))
            async with HonestPair(server, tokens) as honest:
                await asyncio.sleep(1)  # held while the honest pair talks
        honest.assert_healthy()
        return rss

    try:
        rss = asyncio.run(go())
        print(f"\n{len(socks)} held bodies, {rss}")
        assert rss.growth < RSS_BUDGET_BYTES, rss  # the budget plus one read each
        # A small honest request still gets its answer while the budget is spent.
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        for sock in socks:
            sock.close()
