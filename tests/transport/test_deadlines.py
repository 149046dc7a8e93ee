"""Issue 12 finding 3: HTTP deadlines.

A request must arrive whole within `request_timeout_s`, an idle connection
goes after `keepalive_timeout_s` whatever PINGs it sends, and there is no
deadline while the server works on an answer.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

REQUEST_TIMEOUT_S = 1.5
KEEPALIVE_TIMEOUT_S = 2.0
#: The scan runs once a second: a deadline is met within this much more.
SLACK_S = 2.5


@pytest.fixture
def world(data_dir: Path, tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    secret = subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(data_dir),
                             "app", "secret"], capture_output=True, text=True, check=True,
                            timeout=60).stdout.strip()
    server = ServerProcess.configured(
        data_dir, f"[transport]\nrequest_timeout_s = {REQUEST_TIMEOUT_S}\n"
        f"keepalive_timeout_s = {KEEPALIVE_TIMEOUT_S}\n")
    server.start()
    try:
        yield server, secret
    finally:
        server.stop()


class H2Client:
    """The `h2` package over a blocking socket."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=0.2)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def events(self) -> list[object]:
        """What arrived within 0.2 s; a `ConnectionTerminated` if the server hung up."""
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return []
        except OSError:
            return [h2.events.ConnectionTerminated()]
        if not data:
            return [h2.events.ConnectionTerminated()]
        events: list[object] = list(self.conn.receive_data(data))
        self.flush()
        return events

    def get(self, path: str) -> int:
        stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream, [(":method", "GET"), (":path", path),
                                        (":scheme", "http"), (":authority", "x")],
                               end_stream=True)
        self.flush()
        while True:
            for event in self.events():
                if isinstance(event, h2.events.ResponseReceived):
                    return int(dict(event.headers)[b":status"])


def test_http2_pings_do_not_keep_an_idle_connection_open(world) -> None:  # type: ignore[no-untyped-def]
    server, _ = world
    client = H2Client(server)
    assert client.get("/v1/health") == 200
    started = time.monotonic()
    ended = None
    while time.monotonic() - started < KEEPALIVE_TIMEOUT_S + SLACK_S + 3:
        client.conn.ping(b"keepopen")
        client.flush()
        ends = [e for e in client.events() if isinstance(e, h2.events.ConnectionTerminated)]
        if ends:
            ended = ends[0]
            break
        time.sleep(0.3)
    elapsed = time.monotonic() - started
    assert ended is not None, f"still open after {elapsed:.1f} s of PINGs"
    assert elapsed < KEEPALIVE_TIMEOUT_S + SLACK_S
    assert ended.error_code in (None, h2.errors.ErrorCodes.NO_ERROR)
    client.sock.close()


def test_http2_body_dripped_byte_by_byte_gets_408(world) -> None:  # type: ignore[no-untyped-def]
    server, secret = world
    client = H2Client(server)
    stream = client.conn.get_next_available_stream_id()
    client.conn.send_headers(stream, [(":method", "POST"), (":path", "/v1/users"),
                                      (":scheme", "http"), (":authority", "x"),
                                      ("authorization", f"Bearer {secret}"),
                                      ("content-type", "application/json")])
    client.flush()
    started = time.monotonic()
    status = None
    while status is None and time.monotonic() - started < REQUEST_TIMEOUT_S + SLACK_S + 3:
        try:
            client.conn.send_data(stream, b" ")
            client.flush()
        except (h2.exceptions.StreamClosedError, OSError):
            pass
        for event in client.events():
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[b":status"])
        time.sleep(0.3)
    elapsed = time.monotonic() - started
    assert status == 408, f"no answer after {elapsed:.1f} s of dripping"
    assert elapsed < REQUEST_TIMEOUT_S + SLACK_S
    # The connection itself stays usable.
    assert client.get("/v1/health") == 200
    client.sock.close()


def test_http1_partial_request_gets_408_and_idle_keepalive_closes(world) -> None:  # type: ignore[no-untyped-def]
    server, _ = world
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # never finished
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < REQUEST_TIMEOUT_S + SLACK_S
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed quietly once idle: no 408 to a quiet client
        assert KEEPALIVE_TIMEOUT_S - 0.1 < time.monotonic() - started < \
            KEEPALIVE_TIMEOUT_S + SLACK_S


def test_http1_answer_slower_than_the_request_deadline_is_not_cut(world) -> None:  # type: ignore[no-untyped-def]
    server, secret = world
    # Another process holds SQLite's write lock: the server's answer to a
    # write waits for it (busy_timeout), longer than the request deadline.
    database = server.data_dir / "tidings.sqlite3"
    locker = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    unlock = threading.Timer(REQUEST_TIMEOUT_S + SLACK_S + 1, locker.execute, ("COMMIT",))
    unlock.start()
    try:
        body = b'{"address": "slowpoke"}'
        with socket.create_connection((server.host, server.port), timeout=30) as sock:
            started = time.monotonic()
            sock.sendall(b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nAuthorization: Bearer " + secret.encode() +
                         b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            answer = sock.recv(65536)
            elapsed = time.monotonic() - started
    finally:
        unlock.join()
        locker.close()
    assert answer.startswith(b"HTTP/1.1 201"), answer
    assert elapsed > REQUEST_TIMEOUT_S + SLACK_S  # it really was slower than the deadline
