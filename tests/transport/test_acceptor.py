"""The acceptor's bookkeeping: every protocol's connection is counted while open and
released when it ends, including WebSockets (whose upgrade replaces the transport's
protocol) and TLS."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from appliance.protocol.wire import Hello, Role, Welcome, WireConnection
from tests.conftest import tidings
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

SOURCE = "127.0.0.2"  # not exempt from the per-address limits


def edge_stats(server: ServerProcess, key: str) -> dict[str, int]:
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-H", f"Authorization: Bearer {key}",
                          f"http://{server.host}:{server.port}/v1/edge"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    stats: dict[str, int] = json.loads(out)
    return stats


def source_socket(server: ServerProcess) -> socket.socket:
    sock = socket.socket()
    sock.bind((SOURCE, 0))
    sock.connect((server.host, server.port))
    return sock


async def websocket_session(server: ServerProcess, token: str, hold_s: float) -> None:
    sock = source_socket(server)
    async with connect(f"ws://{server.host}:{server.port}/v1/ws", sock=sock,
                       subprotocols=["tidings.v1"]) as ws:  # type: ignore[list-item]
        codec = WireConnection(Role.CLIENT)
        await ws.send(codec.send(Hello(token.encode(), b"ws")))
        events = codec.receive_data(await ws.recv())  # type: ignore[arg-type]
        assert isinstance(events[0], Welcome)
        await asyncio.sleep(hold_s)


def test_every_kind_of_connection_is_released(data_dir: Path, tmp_path: Path) -> None:
    tokens, _ = provision(data_dir, ["frank"])
    key = tidings(data_dir, "operator", "key").stdout.strip()
    # Three at a time from SOURCE: a leak shows as a refusal within a few rounds.
    server = ServerProcess.configured(
        data_dir, "[edge]\nper_ip_connections = 3\nper_ip_rate_per_s = 1000\n")
    server.start()
    try:
        baseline = edge_stats(server, key)["connections"]
        for _ in range(4):
            # WebSocket, closed before and after the sweep re-adopts its carrier.
            asyncio.run(websocket_session(server, tokens["frank"], 0.0))
            asyncio.run(websocket_session(server, tokens["frank"], 1.5))
            # TLS, and plain HTTP/1.1 from SOURCE.
            with source_socket(server) as raw:
                ctx = ssl.create_default_context()
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                with ctx.wrap_socket(raw) as tls:
                    tls.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n"
                                b"Connection: close\r\n\r\n")
                    assert tls.recv(100).startswith(b"HTTP/1.1 200")
            with source_socket(server) as raw:
                raw.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert raw.recv(100).startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + 5
        while edge_stats(server, key)["connections"] > baseline and time.monotonic() < deadline:
            time.sleep(0.1)
        stats = edge_stats(server, key)
        assert stats["connections"] == baseline, stats
        assert stats["refused_per_ip"] == 0, stats
        assert stats["handshakes"] <= baseline, stats
    finally:
        server.stop()
    assert "Traceback" not in server.output, server.output
