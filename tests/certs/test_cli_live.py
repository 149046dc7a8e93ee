"""`tidings cert status|renew` and the operator's figures, against pebble; and an
unkind CA (nonces refused, validation delayed) that the client must ride out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.certs.conftest import MakePebble
from tests.certs.live import (
    HOSTNAME,
    SERVING,
    acme_toml,
    cert_cli,
    cert_status,
    openssl_verify,
    start_server,
    wait_for_output,
    write_roots,
)
from tests.conftest import tidings
from tests.support.operator import operator_stats

pytestmark = pytest.mark.slow


def test_cert_status_renew_and_operator_figures(make_pebble: MakePebble, data_dir: Path,
                                                tmp_path: Path) -> None:
    pebble = make_pebble()
    server = start_server(data_dir, pebble, acme_toml(pebble, challenge="tls-alpn-01",
                                                      redirect=False))
    try:
        wait_for_output(server, SERVING)
        text = cert_cli(data_dir, "status").stdout
        assert re.search(r"hostnames: chat\.tidings\.test", text), text
        assert re.search(r"issuer: https://127\.0\.0\.1:\d+/dir", text), text
        assert re.search(r"last error: -", text), text

        not_due = cert_cli(data_dir, "renew").stdout
        assert "not due" in not_due
        renewed = cert_cli(data_dir, "renew", "--force").stdout
        assert re.search(r"renewed: version 2, valid until 20\d\d-", renewed), renewed
        openssl_verify(server.port, write_roots(pebble, tmp_path))
        assert cert_status(data_dir)["version"] == 2

        tls = operator_stats(server)["tls"]
        assert isinstance(tls, dict)
        assert tls["serving"] == "acme"
        certificate = tls["certificate"]
        assert certificate["hostnames"] == [HOSTNAME]
        assert certificate["version"] == 2
        assert certificate["issuer"] == pebble.directory_url
        assert certificate["last_error"] is None
        assert certificate["next_renewal"] > certificate["not_before"]
    finally:
        server.stop()


def test_cert_commands_without_acme_say_so(data_dir: Path) -> None:
    result = tidings(data_dir, "cert", "status", check=False)
    assert result.returncode == 3
    assert "acme.hostnames: no hostnames: ACME is off" in result.stderr


def test_renew_request_without_a_server_times_out_clearly(make_pebble: MakePebble,
                                                          data_dir: Path) -> None:
    pebble = make_pebble()
    (data_dir.parent / "tidings.toml").write_text(
        acme_toml(pebble, challenge="tls-alpn-01", redirect=False))
    result = cert_cli(data_dir, "renew", "--wait", "1", check=False)
    assert result.returncode == 1
    assert "is `tidings serve` running?" in result.stderr


def test_refused_nonces_are_retried_with_fresh_ones(make_pebble: MakePebble, data_dir: Path,
                                                     tmp_path: Path) -> None:
    # 60 % of good nonces refused as badNonce: an issuance makes a dozen signed
    # requests, so a client that retried once (acme's own `post`) would almost
    # never get through; RFC 8555 §6.5 retries with the error's fresh nonce do.
    pebble = make_pebble(nonce_reject=60)
    server = start_server(data_dir, pebble, acme_toml(pebble, challenge="http-01",
                                                      redirect=True))
    try:
        wait_for_output(server, SERVING, 90.0)
        openssl_verify(server.port, write_roots(pebble, tmp_path))
        assert "Configured to reject 60% of good nonces" in pebble.log()
    finally:
        server.stop()


def test_a_slow_validation_is_awaited_without_busy_polling(make_pebble: MakePebble,
                                                           data_dir: Path) -> None:
    # The CA sleeps up to 3 s before validating (pebble's default behaviour).
    pebble = make_pebble(nonce_reject=0, nosleep=False, env={"PEBBLE_VA_SLEEPTIME": "3"})
    server = start_server(data_dir, pebble, acme_toml(pebble, challenge="http-01",
                                                      redirect=True))
    try:
        wait_for_output(server, SERVING, 90.0)
        log = pebble.log()
        answered = log.index("POST /chalZ/")
        # Polls after the answer: from 0.3 s, each pause 1.5 times the last (0.3, 0.75,
        # 1.4, 2.4, 3.9 s...): at most 6 for a wait of at most 3 s.
        polls = log[answered:].count("POST /authZ/")
        assert 1 <= polls <= 6, log[answered:]
    finally:
        server.stop()
