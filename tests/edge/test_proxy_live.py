"""PROXY protocol v1/v2 from a trusted proxy, with curl --haproxy-protocol and raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.protocol.proxy import encode_v1, encode_v2
from appliance.protocol.wire import Hello, Welcome
from tests.support.client import Client
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

HEALTH = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.fixture
def proxied(data_dir: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    """127.0.0.1 is the trusted load balancer; 203.0.113.0/24 is blocked."""
    server = ServerProcess.configured(
        data_dir, '[edge]\ntrusted_proxies = ["127.0.0.1"]\nblock = ["203.0.113.0/24"]\n'
        "proxy_header_timeout_s = 1\n")
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert "Traceback" not in server.output, server.output


def curl(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args,
                           f"http://{server.host}:{server.port}/v1/health"],
                          capture_output=True, text=True, timeout=30)


def exchange(server: ServerProcess, data: bytes, source: str = "127.0.0.1") -> bytes:
    """Send `data`; everything the server answers until it closes (b"" if reset)."""
    with socket.socket() as sock:
        sock.bind((source, 0))
        sock.settimeout(10)
        sock.connect((server.host, server.port))
        try:
            sock.sendall(data)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            return b""
        return b"".join(chunks)


def test_curl_through_a_trusted_proxy(proxied: ServerProcess) -> None:
    done = curl(proxied, "--haproxy-protocol")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"status": "ok"}
    # From the trusted proxy, the header is required: plain curl gets no answer.
    assert curl(proxied).returncode != 0
    # From anyone else a PROXY header is a protocol error (it could claim any address).
    assert curl(proxied, "--haproxy-protocol", "--interface", "127.0.0.2").returncode != 0
    assert json.loads(curl(proxied, "--interface", "127.0.0.2").stdout) == {"status": "ok"}
    # TLS behind the header (the balancer passes TLS through), HTTP/2 by ALPN.
    done = subprocess.run(["curl", "-sS", "-k", "--http2", "--max-time", "10",
                           "--haproxy-protocol", "-o", "/dev/null", "-w", "%{http_version}",
                           f"https://{proxied.host}:{proxied.port}/v1/health"],
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, "2"), done.stderr


@pytest.mark.parametrize("encode", [encode_v1, encode_v2], ids=["v1", "v2"])
def test_the_filter_sees_the_client_behind_the_proxy(proxied: ServerProcess, encode) -> None:  # type: ignore[no-untyped-def]
    port = proxied.port
    answer = exchange(proxied, encode("198.51.100.7", "127.0.0.1", 40000, port) + HEALTH)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    # The client address the header carries is blocked: refused, nothing answered.
    assert exchange(proxied, encode("203.0.113.9", "127.0.0.1", 40000, port) + HEALTH) == b""
    # A proxy's own health check (v2 LOCAL) stands for the proxy itself.
    assert exchange(proxied, encode_v2(None) + HEALTH).startswith(b"HTTP/1.1 200")


def test_garbage_and_silence_from_the_proxy_are_cut(proxied: ServerProcess) -> None:
    assert exchange(proxied, b"PROXY TCP4 1.2.3 4.5.6.7 1 2\r\n" + HEALTH) == b""
    assert exchange(proxied, b"PROXY " + b"9" * 200) == b""
    with socket.socket() as sock:  # a header that never completes: cut at the deadline
        sock.settimeout(15)
        sock.connect((proxied.host, proxied.port))
        sock.sendall(b"PROXY TCP4 ")
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(10) == b""


def test_native_clients_behind_the_proxy(data_dir: Path, proxied: ServerProcess) -> None:
    tokens, _ = provision(data_dir, ["erin"])

    async def login() -> Welcome | None:
        reader, writer = await asyncio.open_connection(proxied.host, proxied.port)
        client = Client(reader, writer)
        # The header and the client's first frame arrive in one segment.
        writer.write(encode_v2("2001:db8::5", "::1", 1234, proxied.port)
                     + client.codec.send(Hello(token=tokens["erin"].encode(),
                                               device_id=b"d")))
        welcome = await client.expect(Welcome)
        await client.close()
        return welcome  # type: ignore[return-value]

    assert isinstance(asyncio.run(login()), Welcome)
