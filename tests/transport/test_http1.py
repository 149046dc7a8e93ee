"""HTTP/1.1 on the shared port, with curl (a client we did not write)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from appliance.protocol.wire import Message, Status
from tests.support.client import Client
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


def curl(*args: str) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of one curl request."""
    out = subprocess.run(["curl", "-sS", "--max-time", "20", "-i", *args],
                         capture_output=True, timeout=30, check=True).stdout.decode()
    head, _, body = out.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_curl_speaks_http1_on_the_native_port(server: ServerProcess) -> None:
    base = f"http://{server.host}:{server.port}"
    status, headers, body = curl(f"{base}/v1/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert headers["content-type"] == "application/json"
    status, headers, body = curl(f"{base}/nowhere")
    assert status == 404
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body) == {"type": "about:blank", "title": "not found", "status": 404,
                                "detail": "no resource at /nowhere"}
    # Keep-alive: two requests on one connection.
    out = subprocess.run(["curl", "-sS", "-v", f"{base}/v1/health", f"{base}/v1/health"],
                         capture_output=True, text=True, timeout=30, check=True)
    assert "Re-using existing connection" in out.stderr or "Reusing" in out.stderr


async def raw(server: ServerProcess, request: bytes) -> bytes:
    """Send `request` bytes as they are; return everything until the server closes."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(request)
    await writer.drain()
    async with asyncio.timeout(30):
        answer = await reader.read()
    writer.close()
    return answer


def test_oversize_and_malformed_requests_get_4xx_and_native_clients_carry_on(
        data_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tokens, _ = provision(data_dir, ["alice", "bob"])
    server = ServerProcess(data_dir)
    server.start()
    base = f"http://{server.host}:{server.port}"
    try:
        status, _, body = curl("-H", "X-Big: " + "a" * 20_000, f"{base}/v1/health")
        assert status == 431
        assert json.loads(body)["status"] == 431
        big = tmp_path / "big"
        big.write_bytes(b"x" * (1024 * 1024 + 1))
        status, _, body = curl("--data-binary", f"@{big}", f"{base}/v1/health")
        assert status == 413
        assert asyncio.run(raw(server, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
                           ).startswith(b"HTTP/1.1 400 ")

        async def native() -> None:
            alice = await Client.connect(server.host, server.port, tokens["alice"], "a")
            bob = await Client.connect(server.host, server.port, tokens["bob"], "b")
            alice.send(Message(1, b"bob", b"still fine"))
            assert (await alice.status()).status == Status.SENT
            assert (await bob.message()).payload == b"still fine"
            await alice.close()
            await bob.close()
        asyncio.run(native())
    finally:
        server.stop()


def test_a_request_that_never_finishes_is_cut_off(data_dir: Path) -> None:
    # The deadline shortened from its 10 s default: the suite waits for it.
    server = ServerProcess.configured(data_dir, "[transport]\nrequest_timeout_s = 1\n")
    server.start()

    async def slowloris() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        started = time.monotonic()
        async with asyncio.timeout(30):
            answer = await reader.read()
        writer.close()
        return answer, time.monotonic() - started
    try:
        answer, waited = asyncio.run(slowloris())
    finally:
        server.stop()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 0.5 < waited < 10


def test_the_redirect_port_sends_browsers_to_https(data_dir) -> None:  # type: ignore[no-untyped-def]
    server = ServerProcess(data_dir, "--redirect-port", "0")
    server.start()
    try:
        found = re.search(r"redirecting http on port (\d+)", server.output)
        assert found, server.output
        port = int(found[1])
        status, headers, _ = curl(f"http://127.0.0.1:{port}/v1/users?after=a")
        assert status == 308
        assert headers["location"] == f"https://127.0.0.1:{server.port}/v1/users?after=a"
        cert = data_dir / "tls" / "self-signed.crt"
        out = subprocess.run(["curl", "-sS", "-L", "--cacert", str(cert),
                              f"http://localhost:{port}/v1/health"], capture_output=True,
                             text=True, timeout=30, check=True)
        assert json.loads(out.stdout) == {"status": "ok"}
    finally:
        server.stop()


def test_a_connection_over_its_request_rate_gets_429(server: ServerProcess) -> None:
    burst = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n" * 3000  # pipelined, one connection
    answer = asyncio.run(raw(server, burst))
    assert answer.count(b"HTTP/1.1 200 ") >= 1000  # the burst allowance
    assert b"HTTP/1.1 429 Too Many Requests" in answer
    assert answer.count(b"HTTP/1.1 ") < 3000  # and then the connection was closed


def test_an_upload_refused_unread_leaves_its_keep_alive_connection_usable(
        server: ServerProcess) -> None:
    # An upload's body is read only once its handler asks for it; a refusal (401)
    # whose body came whole with its head must not leave reading paused.
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n"
                     b"Content-Length: 5\r\n\r\nhello")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 401 ")
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"ok"}'):
            chunk = sock.recv(65536)
            assert chunk, f"closed after {answer!r}"
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
