"""The attacker of test_hostile_challenges.py, as a process of its own:
``python -m tests.certs.flood <http_port> <tls_port>`` prints JSON results."""

from __future__ import annotations

import asyncio
import collections
import json
import secrets
import ssl
import sys

from tests.certs.live import HOSTNAME

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



async def main(http_port: int, tls_port: int) -> None:
    statuses, hellos = await asyncio.gather(token_flood(http_port), hello_flood(tls_port))
    print(json.dumps({"statuses": collections.Counter(str(s) for s in statuses),
                      "hellos": hellos}))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
