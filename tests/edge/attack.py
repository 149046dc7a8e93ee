"""Hostile connection helpers: silent sockets from a chosen loopback address.

Linux routes all of 127.0.0.0/8 to the loopback interface, so binding the
client side to 127.0.0.2 makes "another address" without a network; the honest
pair keeps 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

from tests.support.client import Client
from tests.support.server import ServerProcess

ATTACKER = "127.0.0.2"


def silent(server: ServerProcess, source: str = ATTACKER) -> socket.socket:
    """A connected TCP socket that will never send a byte."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        sock.connect((server.host, server.port))
    return sock


def still_open(socks: list[socket.socket]) -> int:
    """How many of `socks` the server has not closed (reset or EOF) by now."""
    alive = 0
    for sock in socks:
        try:
            data = sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            alive += 1  # connected, nothing to read: the server holds it open
            continue
        except OSError:
            continue  # reset (refused) or never connected
        if data:
            alive += 1
    return alive


async def honest_logins(server: ServerProcess, token: str, stop: asyncio.Event,
                        interval_s: float = 0.1) -> tuple[int, list[str]]:
    """Log in (HELLO -> WELCOME) and out again every `interval_s` until `stop`."""
    ok, failures = 0, []
    while not stop.is_set():
        started = time.perf_counter()
        try:
            client = await Client.connect(server.host, server.port, token, "login-dev")
            await client.close()
            ok += 1
        except Exception as exc:  # noqa: BLE001 - every failure is the finding
            failures.append(f"{time.perf_counter() - started:.2f}s: {exc!r}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
    return ok, failures
