"""Who may read `/metrics`, and what a scrape costs: a real server, curl, a real flood.

The operator key, or a client address in ``[metrics] allow``; anything else
is an RFC 9457 problem (401, or 403 from an address outside the allowlist)
and is counted.  A scrape is bounded in size, a render is reused for a
second, and a flood of scrapes from another process leaves an honest
client's latency and the server's memory alone.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from appliance import __version__
from appliance.metrics.exporter import MAX_SCRAPE_WAIT_S, SCRAPES_PER_S
from tests.conftest import tidings
from tests.metrics.scraping import (
    H2_TLS,
    H2C,
    HTTP1,
    Answer,
    answer_until,
    samples,
    scrape,
    value,
)
from tests.support.hostile import (
    HONEST_APP,
    HONEST_USERS,
    RSS_BUDGET_BYTES,
    HonestPair,
    RssWatch,
)
from tests.support.provision import provision
from tests.support.server import ServerProcess

REFUSED = "tidings_refusals_total"
#: Far above a render (~7 KiB): the families and their label sets are fixed.
MAX_SCRAPE_BYTES = 64 * 1024
FLOOD_S = 6


def _problem(answer: Answer, status: int) -> dict[str, object]:
    assert answer.status == status, answer
    assert answer.content_type == "application/problem+json"
    doc: dict[str, object] = json.loads(answer.body)
    assert doc["status"] == status
    return doc


def test_the_operator_key_and_nothing_else_by_default(data_dir: Path) -> None:
    secret = tidings(data_dir, "app", "secret").stdout.strip()
    server = ServerProcess(data_dir)
    server.start()
    try:
        key = tidings(data_dir, "operator", "key").stdout.strip()
        for transport in (HTTP1, H2C, H2_TLS):
            _problem(scrape(server, *transport), 401)  # no key: 401 even with no allowlist
            _problem(scrape(server, *transport, key="tdo_not-the-key"), 401)
            _problem(scrape(server, *transport, key=secret), 401)  # an app secret is not it
        ok = scrape(server, *HTTP1, key=key)
        assert ok.status == 200
        assert value(samples(ok.text), REFUSED, limit="metrics_unauthorized") == 9
        assert len(ok.body) < MAX_SCRAPE_BYTES
        head = scrape(server, *HTTP1, key=key, method="HEAD")
        assert (head.status, head.body[-4:]) == (200, b"\r\n\r\n")  # headers only
    finally:
        server.stop()


def test_an_allowed_address_needs_no_key(data_dir: Path) -> None:
    # 127.0.0.2 is allowed; the tests' usual source, 127.0.0.1, is not.
    server = ServerProcess.configured(data_dir, '[metrics]\nallow = ["127.0.0.2/32"]\n')
    server.start()
    try:
        key = tidings(data_dir, "operator", "key").stdout.strip()
        for transport in (HTTP1, H2C, H2_TLS):
            allowed = scrape(server, *transport, source="127.0.0.2")
            assert allowed.status == 200, allowed
            assert value(samples(allowed.text), "tidings_build_info", version=__version__) == 1
            doc = _problem(scrape(server, *transport, source="127.0.0.1"), 403)
            assert "metrics.allow" in str(doc["detail"])
            _problem(scrape(server, *transport, source="127.0.0.1", key="tdo_wrong"), 401)
            assert scrape(server, *transport, source="127.0.0.1", key=key).status == 200
        # A fresh render (the last one may be reused for RENDER_REUSE_S) counts them all.
        answer = answer_until(server, key, lambda a: value(
            samples(a.text), REFUSED, limit="metrics_unauthorized") == 6)
        assert value(samples(answer.text), REFUSED, limit="metrics_unauthorized") == 6

        # SIGHUP reloads the allowlist: a bad entry keeps the old one, named in the log...
        config = data_dir.parent / "tidings.toml"
        config.write_text('[metrics]\nallow = ["127.0.0.1/33"]\n')
        _reload(server, "configuration not reloaded")
        assert "metrics.allow" in server.output
        assert scrape(server, *HTTP1, source="127.0.0.2").status == 200
        # ... a good one replaces it.
        config.write_text('[metrics]\nallow = ["127.0.0.1/32"]\n')
        _reload(server, "metrics: 1 allowed networks")
        assert scrape(server, *HTTP1, source="127.0.0.1").status == 200
        _problem(scrape(server, *HTTP1, source="127.0.0.2"), 403)
    finally:
        server.stop()


def _reload(server: ServerProcess, line: str) -> None:
    """SIGHUP, and wait for the reload's `line` in the log (a new one)."""
    assert server.proc is not None
    seen = server.output.count(line)
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while server.output.count(line) == seen:
        assert time.monotonic() < deadline, server.output
        time.sleep(0.01)


def test_a_render_is_reused_for_a_second(data_dir: Path) -> None:
    server = ServerProcess(data_dir)
    server.start()
    try:
        key = tidings(data_dir, "operator", "key").stdout.strip()
        first = scrape(server, *HTTP1, key=key)
        again = scrape(server, *H2C, key=key)
        # The second came within RENDER_REUSE_S (two curl runs take ~50 ms): the same
        # bytes, though the process's CPU time and the open connections changed.
        assert again.body == first.body
        assert answer_until(server, key, lambda a: a.body != first.body).body != first.body
    finally:
        server.stop()


def test_certificate_days_left_for_a_provided_certificate(data_dir: Path, tmp_path: Path
                                                          ) -> None:
    cert, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key_file), "-out",
                    str(cert), "-days", "30", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=30)
    server = ServerProcess.configured(data_dir, f'[tls]\ncert = "{cert}"\nkey = "{key_file}"\n')
    server.start()
    try:
        key = tidings(data_dir, "operator", "key").stdout.strip()
        figures = samples(scrape(server, *H2_TLS, key=key).text)
        days = value(figures, "tidings_certificate_days_left", serving="provided")
        assert 29.9 < days <= 30.0, days
        assert value(figures, "tidings_certificate_self_signed") == 0
    finally:
        server.stop()


def test_a_scrape_flood_is_paced_and_leaves_honest_clients_alone(data_dir: Path) -> None:
    """A runaway scraper with the key, on 64 connections back to back: it gets
    `SCRAPES_PER_S`, the rest waits its turn or is refused slowly (429, counted)."""
    tokens, _ = provision(data_dir, HONEST_USERS, app=HONEST_APP)
    server = ServerProcess(data_dir)
    server.start()
    try:
        key = tidings(data_dir, "operator", "key").stdout.strip()
        assert server.proc is not None

        async def go() -> tuple[HonestPair, dict[str, float]]:
            async with HonestPair(server, tokens) as honest:
                flood = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "tests.metrics.scrape_flood", server.host,
                    str(server.port), key, str(FLOOD_S), "64", stdout=asyncio.subprocess.PIPE)
                out, _ = await flood.communicate()
            return honest, json.loads(out)

        with RssWatch(server.proc.pid) as rss:
            honest, flood = asyncio.run(go())
        print(f"\nscrape flood: {flood}; server {rss!r}; honest p99"
              f" {honest.p99 * 1000:.1f} ms over {honest.sent} round trips")
        # Served at the pace: turns 1/SCRAPES_PER_S apart, the last granted to a request
        # sent before the flood stopped (then answered up to MAX_SCRAPE_WAIT_S later);
        # +1 for the first turn, +1 for float rounding.  The rest was refused slowly.
        assert flood["200"] <= SCRAPES_PER_S * (FLOOD_S + MAX_SCRAPE_WAIT_S) + 2, flood
        assert flood["200"] >= SCRAPES_PER_S * FLOOD_S / 2, flood
        assert flood["429"] > 0, flood
        figures = samples(answer_until(server, key, lambda a: value(
            samples(a.text), REFUSED, limit="metrics_rate") >= flood["429"]).text)
        assert value(figures, REFUSED, limit="metrics_rate") >= flood["429"]
        assert rss.growth < RSS_BUDGET_BYTES, rss
        honest.assert_healthy()
    finally:
        server.stop()


def test_a_stranger_flooding_without_the_key_is_blocked(data_dir: Path) -> None:
    """No key, from an address the edge's per-IP rules apply to (not 127.0.0.1, exempt):
    after `edge.auth_fail_count` refusals the address is blocked and its connections are
    refused before a byte is read."""
    server = ServerProcess.configured(data_dir, "[edge]\nauth_fail_count = 20\n")
    server.start()
    try:
        key = tidings(data_dir, "operator", "key").stdout.strip()
        assert server.proc is not None
        with RssWatch(server.proc.pid) as rss:
            flood = json.loads(subprocess.run(
                [sys.executable, "-m", "tests.metrics.scrape_flood", server.host,
                 str(server.port), "-", "2", "4", "127.0.0.3"],
                capture_output=True, text=True, check=True, timeout=60).stdout)
        figures = samples(answer_until(server, key, lambda a: value(
            samples(a.text), REFUSED, limit="edge_auto_blocks") >= 1).text)
        print(f"\nstranger's flood: {flood}; server {rss!r}")
        # Every refusal is counted: the 20 that blocked the address, and the few its 4
        # connections had in flight meanwhile (closed in the next loop turns); the block
        # refused the rest of the flood before a byte was read.
        refused = value(figures, REFUSED, limit="metrics_unauthorized")
        assert 20 <= refused <= 20 + 2 * 4, (flood, refused)
        assert flood["401"] <= refused, (flood, refused)
        assert flood["reconnects"] > 100, flood  # it kept trying: refused at accept
        assert value(figures, REFUSED, limit="edge_auto_blocks") == 1
        assert value(figures, REFUSED, limit="edge_blocked") >= 1
        assert "200" not in flood
        assert rss.growth < RSS_BUDGET_BYTES, rss
    finally:
        server.stop()
