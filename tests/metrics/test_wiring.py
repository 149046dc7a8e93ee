"""Which certificate `/metrics` reports: an ACME certificate from a real CA (pebble).

The provided and self-signed cases are in test_exporter.py and test_collector.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from appliance.metrics.wiring import edge_refusals
from tests.certs.conftest import MakePebble
from tests.certs.live import SERVING, acme_toml, cert_status, start_server, wait_for_output
from tests.conftest import tidings
from tests.metrics.scraping import HTTP1, samples, scrape, value


@pytest.mark.slow
def test_certificate_days_left_for_an_acme_certificate(make_pebble: MakePebble,
                                                       data_dir: Path) -> None:
    pebble = make_pebble()
    server = start_server(data_dir, pebble, acme_toml(pebble, challenge="tls-alpn-01",
                                                      redirect=False))
    try:
        wait_for_output(server, SERVING)
        key = tidings(data_dir, "operator", "key").stdout.strip()
        figures = samples(scrape(server, *HTTP1, key=key).text)
        not_after = dt.datetime.fromisoformat(str(cert_status(data_dir)["not_after"]))
        expected = (not_after - dt.datetime.now(dt.UTC)).total_seconds() / 86400
        days = value(figures, "tidings_certificate_days_left", serving="acme")
        assert abs(days - expected) < 0.01, (days, expected)
        assert value(figures, "tidings_certificate_self_signed") == 0
    finally:
        server.stop()


def test_edge_refusals_are_the_counters_not_the_gauges() -> None:
    snapshot = {"refused_per_ip": 3, "refused_filter": 1, "auto_blocks": 2,
                "evicted_handshakes": 4, "accepted": 100, "connections": 7,
                "max_connections": 1000, "blocked_addresses": 2, "filter_allow": 0}
    assert edge_refusals(snapshot) == {"edge_per_ip": 3, "edge_filter": 1,
                                       "edge_auto_blocks": 2, "edge_evicted_handshakes": 4}
