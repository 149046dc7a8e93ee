"""Issue 12 finding 2: a peer that writes and never reads costs the server bounded memory.

Every attack runs through a real socket against a real `tidings serve`, with
the server's RSS sampled (`RssWatch`) and an honest pair of another app
exchanging reliable messages meanwhile (`HonestPair`).  Each attack must stay
under `RSS_BUDGET_BYTES`, and the attacker must be cut off: by pausing (it no
longer gets answers) and then closing it (its buffers freed).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from appliance.protocol.wire import PREFACE, Hello, Message, Ping, encode
from tests.support.hostile import HONEST_APP, HONEST_USERS, RSS_BUDGET_BYTES, HonestPair, RssWatch
from tests.support.operator import operator_stats
from tests.support.provision import provision
from tests.support.server import ServerProcess
from tests.transport.hostile_peers import (
    H2_PING,
    H2_PREFACE,
    H2_SETTINGS,
    SMALL_RCVBUF,
    WS_UPGRADE,
    Flood,
    TlsPeer,
    connect,
    h2_frame,
    wait_closed,
    ws_frame,
)

pytestmark = pytest.mark.slow

#: How long each flood runs.  Long enough for the unfixed server to pass the
#: budget several times over, short enough for the suite.
FLOOD_S = 6.0


@pytest.fixture
def world(data_dir: Path, tmp_path: Path) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    tokens, _ = provision(data_dir, ["alice", "bob"])
    honest, _ = provision(data_dir, HONEST_USERS, app=HONEST_APP)
    # Short deadlines so that the closes happen within the test.
    server = ServerProcess.configured(
        data_dir, "[transport]\nhandshake_timeout_s = 3.0\nsend_timeout_s = 3.0\n")
    server.start()
    try:
        yield server, {**tokens, **honest}
    finally:
        server.stop()


def _hello(token: str, device: str) -> bytes:
    return PREFACE + encode(Hello(token=token.encode(), device_id=device.encode()))


def _native_authenticated(server: ServerProcess, token: str, device: str,
                          rcvbuf: int = SMALL_RCVBUF) -> socket.socket:
    sock = connect(server.host, server.port, rcvbuf)
    sock.sendall(_hello(token, device))
    sock.recv(4096)  # WELCOME: the only read this peer ever does
    return sock


def _websocket_authenticated(server: ServerProcess, token: str, device: str) -> socket.socket:
    sock = connect(server.host, server.port)
    sock.sendall(WS_UPGRADE)
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    sock.sendall(ws_frame(0x2, _hello(token, device)))
    sock.recv(4096)  # WELCOME, in a binary message: the last read
    return sock


async def _attack(server: ServerProcess, tokens: dict[str, str], *floods: Flood) -> RssWatch:
    """Run `floods` beside an honest pair; RSS and honesty checked here."""
    assert server.proc is not None
    with RssWatch(server.proc.pid) as rss:
        async with HonestPair(server, tokens) as honest:
            for flood in floods:
                flood.start()
            await asyncio.gather(*(asyncio.to_thread(f.join) for f in floods))
    print(f"\n{rss}; honest p99 {honest.p99 * 1000:.1f} ms, {honest.sent} round trips")
    assert rss.growth < RSS_BUDGET_BYTES, rss
    honest.assert_healthy()
    return rss


def test_websocket_ping_flood_before_hello(world) -> None:  # type: ignore[no-untyped-def]
    server, tokens = world
    sock = connect(server.host, server.port)
    sock.sendall(WS_UPGRADE)
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    flood = Flood(sock, ws_frame(0x9, b"p" * 125) * 500, FLOOD_S)
    asyncio.run(_attack(server, tokens, flood))
    # No HELLO: the handshake deadline closes it, and its buffers go with it.
    assert wait_closed(sock, 10) is not None
    sock.close()


def test_pipelined_http1_requests_never_read(world) -> None:  # type: ignore[no-untyped-def]
    server, tokens = world
    sock = connect(server.host, server.port)
    flood = Flood(sock, b"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 50, FLOOD_S)
    asyncio.run(_attack(server, tokens, flood))
    assert wait_closed(sock, 10) is not None
    sock.close()


def test_http2_ping_flood_never_read(world) -> None:  # type: ignore[no-untyped-def]
    server, tokens = world
    sock = connect(server.host, server.port)
    sock.sendall(H2_PREFACE + h2_frame(H2_SETTINGS))
    ping = h2_frame(H2_PING, b"12345678")
    flood = Flood(sock, ping * 1000, FLOOD_S)
    asyncio.run(_attack(server, tokens, flood))
    assert wait_closed(sock, 10) is not None
    sock.close()


def _h2_upload_holder(server: ServerProcess, streams: int, body_bytes: int
                      ) -> tuple[socket.socket, int]:
    """An h2 client that starts `streams` uploads of `body_bytes` and never ends them.

    It honours flow control (reads WINDOW_UPDATEs) and stops when the server
    stops granting credit or every body but its last byte is sent.  Returns
    the socket and how many body bytes the server let it send.
    """
    sock = connect(server.host, server.port, rcvbuf=1 << 20)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.remote_settings.max_concurrent_streams = streams
    ids = []
    for _ in range(streams):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":path", "/v1/messages"),
                                (":scheme", "http"), (":authority", "x"),
                                ("content-type", "application/json")])
        ids.append(sid)
    sock.sendall(conn.data_to_send())
    left = dict.fromkeys(ids, body_bytes - 1)
    sent = dict.fromkeys(ids, 0)  # body bytes per stream the server still holds
    chunk = b"x" * 16384
    sock.settimeout(1.0)
    while any(left.values()):
        progressed = False
        for sid in ids:
            while left[sid]:
                room = min(conn.local_flow_control_window(sid), left[sid], len(chunk))
                if room <= 0:
                    break
                conn.send_data(sid, chunk[:room])
                left[sid] -= room
                sent[sid] += room
                progressed = True
        sock.sendall(conn.data_to_send())
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            if not progressed:
                break  # no more credit: the server holds what it is prepared to hold
            continue
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ConnectionTerminated):
                return sock, sum(sent.values())
            if isinstance(event, h2.events.StreamReset):
                # Refused (REFUSED_STREAM): the server dropped what it held of it.
                left[event.stream_id] = sent[event.stream_id] = 0
        sock.sendall(conn.data_to_send())
    return sock, sum(sent.values())


def test_http2_uploads_held_open(world) -> None:  # type: ignore[no-untyped-def]
    server, tokens = world
    assert server.proc is not None

    async def go() -> RssWatch:
        with RssWatch(server.proc.pid) as rss:  # type: ignore[union-attr]
            async with HonestPair(server, tokens) as honest:
                held = await asyncio.gather(*(asyncio.to_thread(
                    _h2_upload_holder, server, 100, 1024 * 1024) for _ in range(3)))
                socks = [sock for sock, _ in held]
                # Held: PINGs keep the connections busy for a while.
                for _ in range(10):
                    for sock in socks:
                        with contextlib.suppress(OSError):
                            sock.sendall(h2_frame(H2_PING, b"12345678"))
                    await asyncio.sleep(0.3)
        for sock in socks:
            sock.close()
        sent = [n for _, n in held]
        print(f"\n{rss}; honest p99 {honest.p99 * 1000:.1f} ms; body bytes accepted {sent}")
        honest.assert_healthy()
        # Credit only within the per-connection budget (2 MiB), which the
        # oldest stream may pass by one body (1 MiB), plus the connection's
        # initial window (64 KiB) that needs no credit.
        assert max(sent) <= 3 * 1024 * 1024 + 65_535, sent
        return rss

    rss = asyncio.run(go())
    assert rss.growth < RSS_BUDGET_BYTES, rss


def test_native_ping_flood_never_read(world) -> None:  # type: ignore[no-untyped-def]
    server, tokens = world
    sock = _native_authenticated(server, tokens["alice"], "flooder")
    flood = Flood(sock, encode(Ping(7)) * 5000, FLOOD_S)
    asyncio.run(_attack(server, tokens, flood))
    assert wait_closed(sock, 10) is not None
    sock.close()


@pytest.mark.parametrize("via", ["native", "websocket"])
def test_realtime_flood_to_a_device_that_never_reads(world, via: str) -> None:  # type: ignore[no-untyped-def]
    server, tokens = world
    # Bob has two devices: one reads everything, one never reads.  The slow
    # one must not hold the server's memory, nor cost the other one anything.
    # The sender keeps to 50 MB/s, which the reading device can take.
    reader = _native_authenticated(server, tokens["bob"], "reads", rcvbuf=4 << 20)
    drained = threading.Thread(target=wait_closed, args=(reader, FLOOD_S + 15), daemon=True)
    drained.start()
    receiver = (_native_authenticated if via == "native" else _websocket_authenticated)(
        server, tokens["bob"], "never-reads")
    sender = socket.create_connection((server.host, server.port))
    sender.sendall(_hello(tokens["alice"], "sender"))
    sender.recv(4096)
    # Real-time (expiry 0) messages of 60 kB, no id: nothing stored, nothing answered.
    frame = encode(Message(0, b"bob", b"z" * 60_000, expiry_s=0, flags=0))
    flood = Flood(sender, frame * 20, FLOOD_S, bytes_per_s=50e6)
    asyncio.run(_attack(server, tokens, flood))
    assert drained.is_alive(), "the reading device was closed too"
    # Closed as a slow consumer: the CLOSE frame sits behind what it never read,
    # so what the peer sees is the connection going away.
    assert wait_closed(receiver, 10) is not None
    assert any("slow consumer" in line for line in server.lines), server.output[-2000:]
    assert operator_stats(server)["refusals"]["slow_consumer"] == 1  # visible to the operator
    for sock in (receiver, sender, reader):
        sock.close()
    drained.join()


def test_native_ping_flood_inside_tls_never_read(world) -> None:  # type: ignore[no-untyped-def]
    server, tokens = world
    peer = TlsPeer(server.host, server.port, str(server.data_dir / "tls" / "self-signed.crt"),
                   "http/1.1")  # then native or HTTP/1.1 by the first bytes: native here
    peer.sock.sendall(peer.encrypt(_hello(tokens["alice"], "tls-flooder")))
    peer.read_some()  # WELCOME: the last read
    burst = encode(Ping(7)) * 5000
    flood = Flood(peer.sock, lambda: peer.encrypt(burst), FLOOD_S)
    asyncio.run(_attack(server, tokens, flood))
    assert wait_closed(peer.sock, 10) is not None
    assert any("slow consumer" in line for line in server.lines), server.output[-2000:]
    peer.sock.close()
