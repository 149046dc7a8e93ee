"""Attacks on the ACME answer paths (issue 13, the edge rule of issue 12).

With ACME on, every ClientHello is read before the handshake (to route
TLS-ALPN-01 validations) and port 80 answers challenge tokens from the
store.  A stranger flooding made-up tokens and acme-tls/1 hellos for our
name must cost bounded memory, at most `ANSWER_READS_PER_S` store reads, and
no honest client's latency.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.certs.flood import HELLOS, HTTP_REQUESTS
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
        async def go() -> tuple[dict[str, Any], HonestPair, RssWatch]:
            assert server.proc is not None
            with RssWatch(server.proc.pid) as rss:
                async with HonestPair(server, honest_tokens) as honest:
                    # The attacker is another process: its own work must not be
                    # timed as the server's (issue 12's lesson).
                    flood = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "tests.certs.flood", found[1], str(server.port),
                        stdout=asyncio.subprocess.PIPE)
                    out, _ = await flood.communicate()
            return json.loads(out), honest, rss

        result, honest, rss = asyncio.run(go())
        print(f"\nchallenge floods: {rss}, honest p99 {honest.p99 * 1000:.1f} ms")
        assert result["statuses"] == {"404": HTTP_REQUESTS}
        assert result["hellos"] == HELLOS
        assert rss.growth < RSS_BUDGET_BYTES, rss
        honest.assert_healthy()
    finally:
        server.stop()
