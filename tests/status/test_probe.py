"""GET /v1/health on the server's own listener: real servers, real sockets."""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.certs.selfsigned import ensure_self_signed
from appliance.status.probe import check_health, loopback_for
from tests.support.server import ServerProcess


@pytest.mark.parametrize(("host", "asked"), [
    ("127.0.0.1", "127.0.0.1"), ("127.0.0.2", "127.0.0.2"), ("0.0.0.0", "127.0.0.1"),
    ("", "127.0.0.1"), ("::", "::1"), ("::1", "::1"), ("localhost", "127.0.0.1"),
    ("192.0.2.1", None), ("2001:db8::1", None), ("example.com", None),
])
def test_only_loopback_is_asked(host: str, asked: str | None) -> None:
    assert loopback_for(host) == asked


@pytest.mark.slow
def test_a_running_server_is_healthy(server: ServerProcess) -> None:
    health = check_health(server.host, server.port)
    assert health.ok, health
    assert health.status == 200
    assert health.url == f"https://127.0.0.1:{server.port}/v1/health"
    assert 0 < health.elapsed_ms < 3000


def test_an_address_that_is_not_loopback_is_not_asked() -> None:
    health = check_health("192.0.2.1", 443)
    assert not health.ok
    assert "not a loopback address" in health.error


def test_a_listener_that_never_answers_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts into its backlog only
        health = check_health("127.0.0.1", silent.getsockname()[1], timeout_s=0.3)
    assert not health.ok
    assert health.status == 0
    assert health.error == "no answer within 0.3 s"


class _Unwell(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "degraded"}'
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


@pytest.fixture
def unwell(tmp_path: Path) -> Iterator[int]:
    cert, key = ensure_self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Unwell)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_an_answer_other_than_ok_is_unhealthy(unwell: int) -> None:
    health = check_health("127.0.0.1", unwell)
    assert not health.ok
    assert health.status == 503
    assert health.error == "HTTP 503: unexpected answer"


def test_a_peer_that_does_not_speak_tls_is_unhealthy() -> None:
    with socket.create_server(("127.0.0.1", 0)) as plain:
        port = plain.getsockname()[1]

        def answer() -> None:
            conn, _ = plain.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer)
        thread.start()
        health = check_health("127.0.0.1", port)
        thread.join()
    assert not health.ok
    assert health.error.startswith("TLS handshake failed: ")


def test_nothing_listening_is_refused() -> None:
    with socket.socket() as bound:  # bound, never listening: the port is ours, connects fail
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        health = check_health("127.0.0.1", port)
    assert not health.ok
    assert health.error == f"connection refused: nothing listens on port {port}"
