"""A backend floods ``POST /v1/messages`` with arrays over HTTP/2 (issue 16 attack review).

Measured before the fix on this 2-core machine: h2load with 4 connections x 100
streams, each an array of 1,000 messages (23 KB), for 10 s: every array was
taken, 400,000 messages waited in the engine at once, the server's RSS grew by
817 MiB, one commit took seconds and the honest pair of another app timed out
(5 s).  Nothing bounded what the engine held for a submission: a device is
paused at `max_unconfirmed`, a backend was not.  Now the engine holds at most
``limits.max_app_submitted`` of one app's messages (and ``max_submitted`` of
all); past them an array is refused whole, before it is parsed, with 429 (503
server-wide) and Retry-After.

After the fix, the same 4 x 100 flood: RSS +39 MiB, nothing lost; this test's
2 x 50: RSS +7 MiB, honest p99 220-660 ms, and once 1,010 ms on CI (session 18).
Three costs made it so: each commit of 500 of the arrays' messages read its 500
addresses one statement at a time, ~100 ms under the flood (the writer thread
waits for the GIL after every read); h2 hex-formatted every 16 KiB DATA frame
for a trace line nobody logs (~8 % of the loop); and h2load ignored its 429s
(the connection's request rate, 500/s) and their Retry-After, ~3,000 refusals a
second.  The batch's addresses are now read 500 at a time
(`Directory.prefetch`), the frame text is cut to what is shown
(`appliance.protocol.h2repr`), and a connection refused more than
`REFUSALS_PER_S` requests a second gets GOAWAY (tests/transport/test_h2_floods.py).
This flood keeps to the connection's rate (``--rps 400``): what refuses it is
the engine's bound on an app's submissions, as intended.  Now: ~200 arrays
taken (~50,000 msg/s), ~3,000 refused, RSS +5 MiB, honest p99 23-28 ms.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.components import missing
from tests.support.hostile import HONEST_APP, HONEST_USERS, RSS_BUDGET_BYTES, HonestPair, RssWatch
from tests.support.provision import provision, write_config
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

FLOOD_S = 4
HONEST_UNDER_FLOOD_S = 0.5
#: Small bounds, so that the flood meets them at once.
LIMITS = {"max_submitted": 2000, "max_app_submitted": 1000}


@dataclass
class World:
    server: ServerProcess
    honest: dict[str, str]
    secret: str


@pytest.fixture
def world(data_dir: Path) -> Iterator[World]:
    honest, _ = provision(data_dir, HONEST_USERS, app=HONEST_APP)
    secret = subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(data_dir),
                             "app", "secret"], capture_output=True, text=True, check=True,
                            timeout=60).stdout.strip()
    config = write_config(data_dir.parent / "tidings.toml", **LIMITS)
    server = ServerProcess(data_dir, command=[sys.executable, "-m", "appliance", "--config",
                                              str(config)])
    server.start()
    try:
        yield World(server, honest, secret)
    finally:
        server.stop()
    assert "Traceback" not in server.output, server.output


class Probe(threading.Thread):
    """Posts small arrays until one is refused; keeps that answer."""

    def __init__(self, world: World) -> None:
        super().__init__(daemon=True)
        self.world = world
        self.refusal: tuple[int, str | None, dict[str, object]] | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        body = json.dumps([{"to": "ghost", "text": "probe"}] * 10)
        while not self.stop.is_set() and self.refusal is None:
            conn = http.client.HTTPConnection(self.world.server.host, self.world.server.port,
                                              timeout=30)
            conn.request("POST", "/v1/messages", body,
                         {"Authorization": f"Bearer {self.world.secret}"})
            response = conn.getresponse()
            doc = json.loads(response.read())
            conn.close()
            if response.status != 200:
                self.refusal = (response.status, response.getheader("retry-after"), doc)


def test_a_flood_of_arrays_is_bounded_and_refused_with_retry_after(world: World) -> None:
    if shutil.which("h2load") is None:
        missing("h2load (nghttp2-client) is needed for this test")
    batch = json.dumps([{"to": f"ghost{i}", "text": ""} for i in range(1000)],
                       separators=(",", ":"))
    body = world.server.data_dir.parent / "batch.json"
    body.write_text(batch)
    server = world.server
    assert server.proc is not None

    async def attack() -> tuple[HonestPair, str]:
        async with HonestPair(server, world.honest) as honest:
            probe = Probe(world)
            probe.start()
            flood = await asyncio.create_subprocess_exec(
                "h2load", "-c", "2", "-m", "50", "--rps", "400", "-D", str(FLOOD_S),
                "-d", str(body),
                "-H", f"authorization: Bearer {world.secret}",
                "-H", "content-type: application/json",
                f"http://{server.host}:{server.port}/v1/messages",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(flood.communicate(), FLOOD_S + 60)
            probe.stop.set()
            await asyncio.to_thread(probe.join, 30)
        assert probe.refusal is not None, "no array was refused"
        status, retry_after, doc = probe.refusal
        assert (status, retry_after, doc["title"]) == (429, "1", "too many requests"), doc
        return honest, out.decode()

    with RssWatch(server.proc.pid) as rss:
        honest, out = asyncio.run(attack())
    codes = re.search(r"status codes: (\d+) 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert codes is not None, out
    taken, refused, failed = map(int, codes.groups())
    print(f"\n{rss}; arrays taken {taken}, refused {refused}; honest p99"
          f" {honest.p99 * 1000:.1f} ms over {len(honest.latencies)}", file=sys.stderr)
    assert taken > 0, out
    assert refused > 0, out
    assert failed == 0, out
    assert rss.growth < RSS_BUDGET_BYTES, rss
    assert not honest.failures, honest.failures
    assert honest.received == honest.sent >= 5
    assert honest.p99 < HONEST_UNDER_FLOOD_S, f"honest p99 {honest.p99 * 1000:.1f} ms"
