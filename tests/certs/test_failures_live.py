"""What a failing CA or validation does (pebble): the served certificate stays,
the error is reported with what to do, the retry backs off and then succeeds."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from tests.certs.conftest import MakePebble
from tests.certs.live import (
    FAILED,
    HOSTNAME,
    SERVING,
    acme_toml,
    cert_status,
    openssl_verify,
    start_server,
    wait_for_output,
    write_roots,
)

pytestmark = pytest.mark.slow


def when(value: object) -> dt.datetime:
    return dt.datetime.fromisoformat(str(value))


def test_a_ca_outage_keeps_the_certificate_and_renewal_recovers_by_itself(
        make_pebble: MakePebble, data_dir: Path, tmp_path: Path) -> None:
    pebble = make_pebble(validity_s=60)
    server = start_server(data_dir, pebble, acme_toml(
        pebble, challenge="tls-alpn-01", redirect=False, acme="renew_remaining = 0.9"))
    try:
        wait_for_output(server, SERVING)
        roots = write_roots(pebble, tmp_path)
        leaf = openssl_verify(server.port, roots)
        pebble.stop()
        output = wait_for_output(server, FAILED, 60.0, count=3)
        assert "cannot reach the CA at" in output
        # Still the same certificate, still trusted.
        assert openssl_verify(server.port, roots) == leaf
        status = cert_status(data_dir)
        assert status["serving"] == "acme"
        assert "cannot reach the CA" in str(status["last_error"])
        assert int(str(status["failed_attempts"])) >= 3
        assert when(status["next_attempt"]) >= when(status["last_attempt"])
        # Backoff: the failures are spaced out, doubling from retry_min_s (0.5 s, ±25 %).
        stamps = [int(n) for n in re.findall(FAILED, server.output)]
        assert stamps[:3] == [1, 2, 3]

        pebble.start()  # back, with new roots and no memory of our account
        wait_for_output(server, SERVING, 60.0, count=2)
        new_roots = write_roots(pebble, tmp_path)
        assert openssl_verify(server.port, new_roots) != leaf
        status = cert_status(data_dir)
        assert status["last_error"] is None
        assert status["failed_attempts"] == 0
    finally:
        server.stop()


def test_a_wrong_dns_answer_fails_validation_with_a_hint_then_succeeds_when_fixed(
        make_pebble: MakePebble, data_dir: Path, tmp_path: Path) -> None:
    pebble = make_pebble()
    # The CA resolves the name to an address where nothing listens.
    pebble.set_dns_a(HOSTNAME, "127.0.0.2")
    server = start_server(data_dir, pebble, acme_toml(pebble, challenge="http-01",
                                                      redirect=True))
    try:
        output = wait_for_output(server, FAILED, 60.0)
        assert "could not validate chat.tidings.test with http-01" in output
        assert "The CA could not reach chat.tidings.test on port 80" in output
        status = cert_status(data_dir)
        assert status["serving"] == "self-signed"  # until the first certificate arrives
        assert "urn:ietf:params:acme:error:connection" in output or "connection" in str(
            status["last_error"])
        pebble.clear_dns_a(HOSTNAME)
        wait_for_output(server, SERVING, 60.0)
        openssl_verify(server.port, write_roots(pebble, tmp_path))
    finally:
        server.stop()
