"""The running server publishes its status: the file and systemd's STATUS= line.

A real `tidings serve` with a real NOTIFY_SOCKET (an AF_UNIX datagram socket
this test owns), real clients of every protocol on the shared port.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import pytest
from websockets.asyncio.client import connect as ws_connect

from appliance.protocol.wire import Hello, Role, Welcome, WireConnection
from appliance.status.report import ServerState, read_report
from tests.support.client import Client
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow
_names = itertools.count()


class NotifySocket:
    """What systemd would receive: every sd_notify datagram, in order."""

    def __init__(self) -> None:
        self.address = f"@tidings-test-{os.getpid()}-{next(_names)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.seen: list[str] = []

    def wait_for(self, needle: str, timeout: float) -> str:
        """The first datagram (from now on) containing `needle`."""
        self.sock.settimeout(timeout)
        while True:
            message = self.sock.recv(4096).decode()  # socket.timeout fails the test
            self.seen.append(message)
            if needle in message:
                return message

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


async def open_every_protocol(host: str, port: int, tokens: dict[str, str]):  # type: ignore[no-untyped-def]
    """One native session, one WebSocket session, one HTTP/1.1 and one HTTP/2 connection:
    (the three stream writers, the WebSocket)."""
    native = await Client.connect(host, port, tokens["alice"], "native")
    codec = WireConnection(Role.CLIENT)
    ws = await ws_connect(f"ws://{host}:{port}/v1/ws", subprotocols=["tidings.v1"])  # type: ignore[list-item]
    await ws.send(codec.send(Hello(tokens["bob"].encode(), b"browser")))
    assert any(isinstance(e, Welcome) for e in codec.receive_data(await ws.recv()))
    reader, http1 = await asyncio.open_connection(host, port)
    http1.write(b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    h2_reader, http2 = await asyncio.open_connection(host, port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    http2.write(conn.data_to_send())
    conn.receive_data(await h2_reader.read(65536))  # the server's SETTINGS: it is HTTP/2
    return [native.writer, http1, http2], ws


def test_status_file_and_systemd_status_follow_the_server(data_dir: Path,
                                                          notify: NotifySocket) -> None:
    tokens, _ = provision(data_dir, ["alice", "bob"])
    server = ServerProcess(data_dir, env={"NOTIFY_SOCKET": notify.address})
    server.start()
    try:
        # Written before the "listening" line: no waiting for the first report.
        first = read_report(data_dir)
        assert first is not None
        assert server.proc is not None
        assert (first.state, first.pid, first.version) == (ServerState.RUNNING,
                                                          server.proc.pid, "0.1.0")
        assert [(x.role, x.host, x.port, x.activated) for x in first.listeners] == [
            ("main", "127.0.0.1", server.port, False)]
        assert (first.connections, first.commit_queue, first.store_failing) == (0, 0, False)
        assert first.store_backend == "sqlite"
        assert first.store_location == f"SQLite {data_dir / 'tidings.sqlite3'}"
        cert = first.certificate
        assert cert is not None
        assert (cert.serving, cert.renewal) == ("self-signed", "none")
        days = cert.days_left(first.updated_ms)
        assert days is not None
        assert 824 < days <= 825
        notify.wait_for("READY=1", 10)
        assert "STATUS=0 connections, 0 messages waiting for commit" in notify.seen

        async def connected() -> str:
            writers, ws = await open_every_protocol(server.host, server.port, tokens)
            loop = asyncio.get_running_loop()
            # The next periodic report (every 5 s) counts them.
            line = await loop.run_in_executor(None, notify.wait_for, "STATUS=4 connections",
                                              15)
            for writer in writers:
                writer.close()
            await ws.close()
            return line

        line = asyncio.run(connected())
        assert line == "STATUS=4 connections, 0 messages waiting for commit"
        report = read_report(data_dir)
        assert report is not None
        assert report.by_protocol == {"native": 1, "websocket": 1, "http1": 1, "http2": 1}
        assert report.connections == 4
        assert report.updated_ms > first.updated_ms
        assert report.uptime_s >= 4.0
        assert report.started_ms == first.started_ms
    finally:
        assert server.stop() == 0
    notify.wait_for("STOPPING=1", 10)
    last = read_report(data_dir)
    assert last is not None
    assert last.state is ServerState.STOPPED
    assert last.connections == 0


def test_a_status_file_that_cannot_be_written_does_not_stop_the_server(
        data_dir: Path, notify: NotifySocket) -> None:
    (data_dir / "run").write_text("not a directory")  # every write fails
    server = ServerProcess(data_dir, env={"NOTIFY_SOCKET": notify.address})
    server.start()
    try:
        notify.wait_for("READY=1", 10)
        # It keeps telling systemd, and says once why the file is missing.
        notify.wait_for("STATUS=0 connections", 15)
    finally:
        assert server.stop() == 0
    assert server.output.count("cannot write the status file") == 1
    assert (data_dir / "run").read_text() == "not a directory"
