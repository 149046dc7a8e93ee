"""The redirect listener (port 80) stands behind the same edge as the main port.

Before, it had its own request deadline and nothing else: a blocked address
could use it, and silent connections there were capped by nothing, so a
flood on port 80 could spend the file descriptors the main port needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.edge.attack import still_open
from tests.support.client import Client
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

PER_IP = 8


def _connect(port: int, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        sock.connect(("127.0.0.1", port))
    return sock


def _get(port: int, source: str) -> bytes:
    """One request; what came back ("" when the connection was refused or reset)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        except ConnectionResetError:
            return b""
        return answer


def _until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_ip_filter_and_the_per_address_cap_hold_on_the_redirect_port(
        data_dir: Path) -> None:
    tokens, _ = provision(data_dir, ["alice"])
    server = ServerProcess.configured(data_dir, (
        '[server]\nredirect_port = 0\n'
        f'[edge]\nblock = ["127.0.0.2/32"]\nexempt = []\nper_ip_connections = {PER_IP}\n'))
    server.start()
    socks: list[socket.socket] = []
    try:
        found = re.search(r"redirecting http on port (\d+)", server.output)
        assert found, server.output
        port = int(found[1])
        assert _get(port, "127.0.0.1").startswith(b"HTTP/1.1 308")
        assert _get(port, "127.0.0.2") == b""  # blocked: reset before a byte is read

        socks = [_connect(port, "127.0.0.3") for _ in range(5 * PER_IP)]
        assert _until(lambda: still_open(socks) <= PER_IP)
        # Port 80's connections count with the main port's: 127.0.0.3 has none left.
        main = _connect(server.port, "127.0.0.3")
        socks.append(main)
        assert _until(lambda: still_open([main]) == 0)
        # Others are served on both ports.
        assert _get(port, "127.0.0.4").startswith(b"HTTP/1.1 308")

        async def login() -> None:
            alice = await Client.connect(server.host, server.port, tokens["alice"], "a")
            await alice.close()

        asyncio.run(login())
    finally:
        for sock in socks:
            sock.close()
        server.stop()
