"""Finding 7 of issue 12: no per-IP or global connection cap.

Reproduced through real sockets: thousands of silent connections from one
address, and a stream of silent connections against a server with few file
descriptors.  Honest users of another app must keep connecting and exchanging.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import pytest

from appliance.edge.limits import DEFAULT_PER_IP_CONNECTIONS
from tests.edge.attack import honest_logins, silent, still_open
from tests.support.hostile import HONEST_APP, HONEST_USERS, RSS_BUDGET_BYTES, HonestPair, RssWatch
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


async def _until(predicate, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return bool(predicate())


def test_8000_silent_connections_from_one_address_are_capped(data_dir: Path) -> None:
    tokens, _ = provision(data_dir, HONEST_USERS, app=HONEST_APP)
    login, _ = provision(data_dir, ["login"], app=HONEST_APP)
    server = ServerProcess(data_dir)
    server.start()
    socks: list[socket.socket] = []

    async def attack() -> tuple[bool, int, int, list[str], HonestPair]:
        stop = asyncio.Event()
        logins = asyncio.get_running_loop().create_task(
            honest_logins(server, login["login"], stop))
        async with HonestPair(server, tokens) as honest:
            started = time.monotonic()
            for _ in range(8000):
                socks.append(silent(server))
                if len(socks) % 20 == 0:
                    await asyncio.sleep(0.001)  # the honest pair shares this loop
            capped = await _until(lambda: still_open(socks) <= DEFAULT_PER_IP_CONNECTIONS, 5.0)
            open_now = still_open(socks)
            await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - started)))  # enough samples
            stop.set()
            ok, failures = await logins
        return capped, open_now, ok, failures, honest

    try:
        with RssWatch(server.proc.pid) as rss:  # type: ignore[union-attr]
            capped, open_now, ok, failures, honest = asyncio.run(attack())
        print(rss, f"open {open_now}, logins {ok}, honest p99 {honest.p99 * 1000:.1f} ms")
        assert capped, f"{open_now} of 8000 silent connections still open"
        honest.assert_healthy()
        assert rss.growth < RSS_BUDGET_BYTES, rss
        assert not failures, (ok, failures)
        assert ok >= 5, ok
    finally:
        for sock in socks:
            sock.close()
        server.stop()


def test_silent_connections_under_a_low_fd_limit_do_not_lock_out_logins(
        data_dir: Path) -> None:
    tokens, _ = provision(data_dir, HONEST_USERS, app=HONEST_APP)
    login, _ = provision(data_dir, ["login"], app=HONEST_APP)
    server = ServerProcess(data_dir, command=["prlimit", "--nofile=256:256", sys.executable,
                                              "-m", "appliance"])
    server.start()
    socks: list[socket.socket] = []

    async def attack() -> tuple[int, list[str], HonestPair]:
        stop = asyncio.Event()
        logins = asyncio.get_running_loop().create_task(
            honest_logins(server, login["login"], stop))
        async with HonestPair(server, tokens) as honest:
            for _ in range(6 * 130):  # 130 new silent connections a second, for 6 s
                socks.append(silent(server))
                await asyncio.sleep(1 / 130)
            stop.set()
            ok, failures = await logins
        return ok, failures, honest

    try:
        with RssWatch(server.proc.pid) as rss:  # type: ignore[union-attr]
            ok, failures, honest = asyncio.run(attack())
        print(rss, f"logins ok {ok}, failed {len(failures)}, honest p99 {honest.p99 * 1000:.1f}")
        assert not failures, (ok, failures[:5])
        assert ok >= 20, ok
        honest.assert_healthy()
        assert rss.growth < RSS_BUDGET_BYTES, rss
    finally:
        for sock in socks:
            sock.close()
        server.stop()


def test_silent_connections_from_many_addresses_do_not_lock_out_logins(
        data_dir: Path) -> None:
    """Each address stays under its caps; together they fill the global handshake cap."""
    tokens, _ = provision(data_dir, HONEST_USERS, app=HONEST_APP)
    login, _ = provision(data_dir, ["login"], app=HONEST_APP)
    server = ServerProcess(data_dir, command=["prlimit", "--nofile=256:256", sys.executable,
                                              "-m", "appliance"])
    server.start()
    socks: list[socket.socket] = []

    async def attack() -> tuple[int, list[str], HonestPair]:
        stop = asyncio.Event()
        logins = asyncio.get_running_loop().create_task(
            honest_logins(server, login["login"], stop))
        async with HonestPair(server, tokens) as honest:
            for i in range(6 * 130):
                socks.append(silent(server, f"127.0.1.{i % 200 + 1}"))
                await asyncio.sleep(1 / 130)
            stop.set()
            ok, failures = await logins
        return ok, failures, honest

    try:
        with RssWatch(server.proc.pid) as rss:  # type: ignore[union-attr]
            ok, failures, honest = asyncio.run(attack())
        print(rss, f"logins ok {ok}, failed {len(failures)}, honest p99 {honest.p99 * 1000:.1f}")
        assert not failures, (ok, failures[:5])
        assert ok >= 20, ok
        honest.assert_healthy()
        assert rss.growth < RSS_BUDGET_BYTES, rss
    finally:
        for sock in socks:
            sock.close()
        server.stop()
