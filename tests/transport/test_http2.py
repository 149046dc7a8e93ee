"""HTTP/2 on the shared port: curl, nghttp, and abusive clients built on h2."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


def test_curl_and_nghttp_speak_http2(server: ServerProcess) -> None:
    base = f"{server.host}:{server.port}"
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-w", "%{http_version}",
                          f"http://{base}/v1/health"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert out == '{"status":"ok"}2'
    cert = server.data_dir / "tls" / "self-signed.crt"
    out = subprocess.run(["curl", "-sS", "--http2", "--cacert", str(cert), "-w",
                          "%{http_version}", f"https://localhost:{server.port}/v1/nowhere"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.endswith("}2")  # ALPN chose h2
    assert json.loads(out[:-1])["status"] == 404
    nghttp = subprocess.run(["nghttp", "-nv", f"http://{base}/v1/health"], capture_output=True,
                            text=True, timeout=30)
    assert nghttp.returncode == 0, nghttp.stderr
    assert ":status: 200" in nghttp.stdout


def _h2_client(server: ServerProcess) -> tuple[socket.socket, h2.connection.H2Connection]:
    sock = socket.create_connection((server.host, server.port), timeout=20)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def _events_until_closed(sock: socket.socket, conn: h2.connection.H2Connection) -> list[object]:
    events: list[object] = []
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return events
        if not data:
            return events
        try:
            events.extend(conn.receive_data(data))
        except h2.exceptions.ProtocolError:
            return events
        sock.sendall(conn.data_to_send())


def _still_serving(server: ServerProcess) -> bool:
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge",
                          f"http://{server.host}:{server.port}/v1/health"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout == '{"status":"ok"}'


def test_rapid_reset_is_cut_off(server: ServerProcess) -> None:
    sock, conn = _h2_client(server)
    headers = [(":method", "GET"), (":path", "/v1/health"), (":scheme", "http"),
               (":authority", "x")]
    for _ in range(300):
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, headers, end_stream=True)
        conn.reset_stream(stream)
    sock.sendall(conn.data_to_send())
    events = _events_until_closed(sock, conn)
    sock.close()
    ends = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert ends
    assert ends[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert _still_serving(server)


def test_continuation_flood_is_cut_off(server: ServerProcess) -> None:
    sock, conn = _h2_client(server)
    # HEADERS without END_HEADERS, then CONTINUATION frames that never end the block.
    def raw(ftype: int, payload: bytes) -> bytes:  # RFC 9113 §4.1 frame, stream 1, no flags
        return len(payload).to_bytes(3, "big") + bytes([ftype, 0]) + (1).to_bytes(4, "big") \
            + payload

    flood = raw(0x1, b"\x82") + b"".join(raw(0x9, b"\x00" * 1000) for _ in range(500))
    # Closed before the whole flood was written: that is the point.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(flood)
    events = _events_until_closed(sock, conn)
    sock.close()
    ends = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert ends
    assert ends[0].error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert _still_serving(server)


def test_streams_beyond_the_limit_are_refused(server: ServerProcess) -> None:
    sock, conn = _h2_client(server)
    # Ignore the advertised limit of 100 (a hostile client would): 120 open streams,
    # none of them ever finished.
    conn.remote_settings.max_concurrent_streams = 1000
    for _ in range(120):
        conn.send_headers(conn.get_next_available_stream_id(),
                          [(":method", "POST"), (":path", "/v1/users"), (":scheme", "http"),
                           (":authority", "x")])
    sock.sendall(conn.data_to_send())
    events = _events_until_closed(sock, conn)
    sock.close()
    refused = [e for e in events if isinstance(e, h2.events.StreamReset)
               and e.error_code == h2.errors.ErrorCodes.REFUSED_STREAM]
    ended = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    # Either way no stream beyond the limit is served: refused one by one, or the
    # connection ended (h2 treats exceeding an acknowledged limit as a protocol error).
    assert refused or (ended and ended[0].error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR)
    assert not [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert _still_serving(server)


def test_concurrent_uploads_past_the_connection_budget_all_complete(server: ServerProcess
                                                                   ) -> None:
    # Four bodies of 900 kB on one connection: more than its 2 MiB budget, so
    # the server grants credit oldest first; every request gets its answer, or is
    # refused (REFUSED_STREAM: not processed, retry) when what waits for credit
    # would shut the connection's window — never a wait until the deadline (408).
    sock, conn = _h2_client(server)
    body = b'{"address": "' + b"x" * 900_000 + b'"}'
    streams = {}
    for _ in range(4):
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(":method", "POST"), (":path", "/v1/users"),
                                   (":scheme", "http"), (":authority", "x"),
                                   ("content-type", "application/json")])
        streams[stream] = body
    sock.sendall(conn.data_to_send())
    statuses: dict[int, int] = {}
    while len(statuses) < len(streams):
        for stream, rest in streams.items():
            room = min(conn.local_flow_control_window(stream), len(rest), 16384)
            if rest and room > 0:
                conn.send_data(stream, rest[:room], end_stream=room == len(rest))
                streams[stream] = rest[room:]
        sock.sendall(conn.data_to_send())
        data = sock.recv(65536)
        assert data, "the server closed the connection"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                statuses[event.stream_id] = int(dict(event.headers)[b":status"])
            elif (isinstance(event, h2.events.StreamReset)
                  and event.stream_id not in statuses):
                assert event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM, event
                statuses[event.stream_id] = 0  # refused: a client retries it
                streams[event.stream_id] = b""
        sock.sendall(conn.data_to_send())
    sock.close()
    assert sorted(statuses) == sorted(streams)
    assert 408 not in statuses.values()
    answered = [status for status in statuses.values() if status]
    assert len(answered) >= 2, statuses  # the budget and the oldest's pass hold two
    assert all(400 <= status < 500 for status in answered), statuses  # no credentials


def _upload(sock: socket.socket, conn: h2.connection.H2Connection, body: bytes, *,
            finish: bool) -> int:
    """POST `body` on a new stream as credit allows; its status (0: refused), or -1 if
    `finish` is False and the server stops granting credit (the body is held open)."""
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, [(":method", "POST"), (":path", "/v1/users"), (":scheme", "http"),
                               (":authority", "x"), ("content-type", "application/json")])
    sock.sendall(conn.data_to_send())
    rest = body if finish else body[:-1]
    while True:
        room = min(conn.local_flow_control_window(stream), len(rest), 16384)
        if rest and room > 0:
            conn.send_data(stream, rest[:room], end_stream=finish and room == len(rest))
            rest = rest[room:]
            sock.sendall(conn.data_to_send())
            continue
        if not finish and not rest:
            return -1
        try:
            data = sock.recv(65536)
        except TimeoutError:
            if not finish:
                return -1  # no more credit: the server holds what it is prepared to hold
            raise
        assert data, "the server closed the connection"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                return int(dict(event.headers)[b":status"])
            if isinstance(event, h2.events.StreamReset) and event.stream_id == stream:
                return 0
        sock.sendall(conn.data_to_send())


def test_an_upload_waits_for_the_server_budget_rather_than_being_refused(
        data_dir: Path, tmp_path: Path) -> None:
    # A stranger's unfinished upload holds the whole server-wide body budget; an
    # honest upload alone on its connection must wait for room, not be refused at
    # once (it was, after 64 KB, while any stranger held the budget).  It waits
    # until the stranger's request deadline frees the budget, or its own passes.
    server = ServerProcess.configured(
        data_dir, "[transport]\nh2_body_bytes_total = 131072\n"
        "h2_body_bytes_per_connection = 131072\nrequest_timeout_s = 2.0\n")
    server.start()
    try:
        stranger, stranger_conn = _h2_client(server)
        stranger.settimeout(1.0)
        body = b'{"address": "' + b"x" * 400_000 + b'"}'
        assert _upload(stranger, stranger_conn, body, finish=False) == -1  # held open
        honest, honest_conn = _h2_client(server)
        status = _upload(honest, honest_conn, body[:200_000] + b'"}', finish=True)
        assert status != 0, "the honest upload was refused"
        assert 400 <= status < 500, status  # answered: no credentials (401) or late (408)
        stranger.close()
        honest.close()
    finally:
        server.stop()
