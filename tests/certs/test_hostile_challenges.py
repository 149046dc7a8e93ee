"""Attacks on the ACME answer paths (issue 13, the edge rule of issue 12).

With ACME on, every ClientHello is read before the handshake (to route
TLS-ALPN-01 validations) and port 80 answers challenge tokens from the
store.  A stranger flooding made-up tokens and acme-tls/1 hellos for our
name must cost bounded memory, at most `ANSWER_READS_PER_S` store reads, and
no honest client's latency.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import ssl
from pathlib import Path

import pytest

from tests.certs.live import HOSTNAME
from tests.support.hostile import (
    HONEST_APP,
    HONEST_USERS,
    RSS_BUDGET_BYTES,
    HonestPair,
    RssWatch,
)
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

HTTP_REQUESTS = 3000
HELLOS = 600


async def token_flood(port: int) -> list[int]:
    """Made-up HTTP-01 tokens, one request per connection, 20 at a time."""
    statuses: list[int] = []
    sem = asyncio.Semaphore(20)

    async def one() -> None:
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            token = secrets.token_urlsafe(32)
            writer.write(f"GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: x\r\n"
                         "\r\n".encode())
            head = await reader.read(4096)
            statuses.append(int(head.split(b" ", 2)[1]))
            writer.close()

    await asyncio.gather(*(one() for _ in range(HTTP_REQUESTS)))
    return statuses


async def hello_flood(port: int) -> int:
    """ClientHellos offering acme-tls/1 for our name: each gets the normal certificate
    (no challenge is pending), never a hang."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["acme-tls/1"])
    done = 0
    sem = asyncio.Semaphore(20)

    async def one() -> None:
        nonlocal done
        async with sem:
            _reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname=HOSTNAME), 10)
            sslobj = writer.get_extra_info("ssl_object")
            assert sslobj.selected_alpn_protocol() is None  # nothing to answer
            done += 1
            writer.close()

    await asyncio.gather(*(one() for _ in range(HELLOS)))
    return done


def test_made_up_tokens_and_acme_hellos_cost_bounded_reads_memory_and_latency(
        data_dir: Path) -> None:
    toml = "\n".join(["[server]", "redirect_port = 0", "[acme]", f'hostnames = ["{HOSTNAME}"]',
                      'issuers = ["https://127.0.0.1:9/dir"]', "retry_min_s = 3600",
                      "retry_max_s = 3600"]) + "\n"
    server = ServerProcess.configured(data_dir, toml)
    server.start()
    honest_tokens, _ = provision(data_dir, HONEST_USERS, app=HONEST_APP)
    found = re.search(r"redirecting http on port (\d+)", server.output)
    assert found is not None
    try:
        async def go() -> tuple[list[int], int, HonestPair, RssWatch]:
            assert server.proc is not None
            with RssWatch(server.proc.pid) as rss:
                async with HonestPair(server, honest_tokens) as honest:
                    statuses, hellos = await asyncio.gather(token_flood(int(found[1])),
                                                            hello_flood(server.port))
            return statuses, hellos, honest, rss

        statuses, hellos, honest, rss = asyncio.run(go())
        print(f"\nchallenge floods: {rss}, honest p99 {honest.p99 * 1000:.1f} ms")
        assert statuses == [404] * HTTP_REQUESTS
        assert hellos == HELLOS
        assert rss.growth < RSS_BUDGET_BYTES, rss
        honest.assert_healthy()
    finally:
        server.stop()
