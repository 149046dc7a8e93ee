"""Several processes on one store (issue 13): one order, every process serves the
result, and whichever process a validation reaches answers it."""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from appliance.certs.challenges import ACME_IDENTIFIER_OID
from appliance.config import load_config
from appliance.config.database import record_database
from appliance.engine.clock import SystemClock
from appliance.storage import open_storage
from tests.certs.conftest import MakePebble
from tests.certs.live import (
    HOSTNAME,
    ORDERING,
    SERVING,
    acme_toml,
    cert_status,
    openssl_verify,
    wait_for_output,
    write_roots,
)
from tests.support.mariadb import MariaDBServer
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


def test_two_processes_sharing_a_database_place_one_order_and_both_serve_it(
        make_pebble: MakePebble, mariadb: MariaDBServer, tmp_path: Path) -> None:
    pebble = make_pebble()
    first_dir, second_dir = tmp_path / "a" / "data", tmp_path / "b" / "data"
    for d in (first_dir, second_dir):
        d.mkdir(parents=True)
    location = mariadb.use_in(first_dir, "acme")
    record_database(location, second_dir)
    # The first process is the one the CA reaches (pebble's ports): `tidings serve`.
    # The second listens elsewhere (see cert_worker.py for why it is not a second
    # `tidings serve` yet): if it wins the lease, the first answers from the store.
    first = ServerProcess.configured(first_dir, acme_toml(pebble, challenge="http-01",
                                                          redirect=True))
    config = second_dir.parent / "tidings.toml"
    config.write_text(acme_toml(pebble, challenge="http-01", redirect=False))
    second = ServerProcess(second_dir, command=[sys.executable, "-m", "tests.certs.cert_worker",
                                                "--config", str(config)],
                           )
    first.start(port=pebble.tls_port)
    try:
        second.start()
        wait_for_output(first, SERVING, 60.0)
        wait_for_output(second, SERVING, 60.0)
        orders = len(re.findall(ORDERING, first.output + second.output))
        assert orders == 1, first.output + second.output
        roots = write_roots(pebble, tmp_path)
        assert openssl_verify(first.port, roots) == openssl_verify(second.port, roots)
        assert cert_status(first_dir)["version"] == 1
    finally:
        first.stop()
        second.stop()


def publish(data_dir: Path, name: str, answer: bytes) -> None:
    """Publish a challenge answer as another process on the store would."""
    async def go() -> None:
        clock = SystemClock()
        store = await open_storage(load_config(None, {"storage.data_dir": data_dir}).storage,
                                   clock.wall_ms())
        try:
            now = clock.wall_ms()
            await store.save_challenge_answer(name, answer, now + 60_000, now)
        finally:
            await store.close()
    asyncio.run(go())


def test_answers_another_process_published_are_served(data_dir: Path, tmp_path: Path) -> None:
    # An issuer nobody answers at: this process never orders; it only serves.
    toml = "\n".join(["[server]", "redirect_port = 0", "[acme]", f'hostnames = ["{HOSTNAME}"]',
                      'issuers = ["https://127.0.0.1:9/dir"]', "retry_min_s = 3600",
                      "retry_max_s = 3600"]) + "\n"
    server = ServerProcess.configured(data_dir, toml)
    server.start()
    try:
        found = re.search(r"redirecting http on port (\d+)", server.output)
        assert found is not None, server.output
        redirect = int(found[1])
        key_authorization = "tok_ABC-123.thumbprint"
        publish(data_dir, f"tls-alpn-01:{HOSTNAME}", key_authorization.encode())
        publish(data_dir, "http-01:tok_ABC-123", key_authorization.encode())

        # TLS-ALPN-01 (RFC 8737): openssl offering acme-tls/1 gets the challenge certificate.
        result = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername",
             HOSTNAME, "-alpn", "acme-tls/1"], input="", capture_output=True, text=True,
            timeout=30, check=False)
        assert "ALPN protocol: acme-tls/1" in result.stdout, result.stdout + result.stderr
        pem = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
                        result.stdout, re.S)
        assert pem is not None
        cert = x509.load_pem_x509_certificate(pem.group(0).encode())
        ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
        assert ext.critical
        digest = hashlib.sha256(key_authorization.encode()).digest()
        assert ext.value.value == b"\x04\x20" + digest  # type: ignore[attr-defined]

        # HTTP-01 (RFC 8555 §8.3) on the plain-HTTP port, with curl.
        body = subprocess.run(
            ["curl", "-sS", "--fail", f"http://127.0.0.1:{redirect}/.well-known/acme-challenge/"
             "tok_ABC-123"], capture_output=True, text=True, timeout=30, check=True).stdout
        assert body == key_authorization
        missing = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
             f"http://127.0.0.1:{redirect}/.well-known/acme-challenge/unknown"],
            capture_output=True, text=True, timeout=30, check=False).stdout
        assert missing == "404"
        # Without acme-tls/1, the normal certificate (self-signed until ACME succeeds).
        normal = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername",
             HOSTNAME], input="", capture_output=True, text=True, timeout=30, check=False)
        assert "Tidings (self-signed)" in normal.stdout
    finally:
        server.stop()
