"""The certificate check on real certificates: provided files, the self-signed pair, ACME's
stored certificate with a failing renewal, and what a running server reports."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.certs.selfsigned import ensure_self_signed
from appliance.config import load_config
from appliance.doctor.certificate import check_certificate
from appliance.doctor.model import Subject, Verdict
from appliance.doctor.registry import examine
from appliance.engine.clock import SystemClock
from appliance.storage import open_storage
from appliance.storage.models import RenewalState, StoredCertificate
from tests.support.server import ServerProcess

DAY_MS = 86_400_000


def certificate(directory: Path, days_left: float, lifetime_days: float = 90
                ) -> tuple[Path, Path, bytes, bytes]:
    """A certificate expiring `days_left` days from now: (cert file, key file, pems)."""
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chat.example.com")])
    not_after = now + dt.timedelta(days=days_left)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_after - dt.timedelta(days=lifetime_days))
            .not_valid_after(not_after).sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(key_pem)
    return directory / "cert.pem", directory / "key.pem", cert_pem, key_pem


def subject(data_dir: Path, **settings: object) -> Subject:
    config = load_config(None, {"storage.data_dir": data_dir, **settings})
    return Subject(config, SystemClock().wall_ms())


@pytest.mark.parametrize(("days", "verdict", "said"), [
    (-1, Verdict.FAIL, "provided certificate EXPIRED at "),
    (3, Verdict.FAIL, "days left): under 7 days"),
    (20, Verdict.WARN, "days left): replace it soon"),
    (90, Verdict.OK, "days left); renewal manual"),
])
def test_provided_files(tmp_path: Path, days: float, verdict: Verdict, said: str) -> None:
    cert, key, _, _ = certificate(tmp_path / "tls", days)
    found = check_certificate(subject(tmp_path / "data", **{"tls.cert": str(cert),
                                                            "tls.key": str(key)}))
    assert found.verdict is verdict, found
    assert said in found.summary
    assert found.figures["serving"] == "provided"
    assert abs(found.figures["days_left"] - days) < 0.1
    if verdict is not Verdict.OK:
        assert "install a renewed certificate at [tls] cert/key" in found.fix


def test_self_signed_pair(data_dir: Path) -> None:
    found = check_certificate(subject(data_dir))
    assert (found.verdict, found.summary) == (
        Verdict.OK, "self-signed certificate not made yet (made at the first start); renewal"
                    " none")
    # One made 821 days ago (they last 825): four days left.
    ensure_self_signed(data_dir / "tls", dt.datetime.now(dt.UTC) - dt.timedelta(days=821))
    found = check_certificate(subject(data_dir))
    assert found.verdict is Verdict.FAIL
    assert found.summary.startswith("self-signed certificate expires ")
    assert "a new self-signed pair is made" in found.fix


def test_acme_renewal_failing(data_dir: Path) -> None:
    name = "chat.example.com"
    _, _, cert_pem, key_pem = certificate(data_dir.parent / "acme", 25, 90)
    settings = {"acme.hostnames": (name,), "acme.email": "ops@example.com"}
    now = SystemClock().wall_ms()

    async def store_state(with_certificate: bool) -> None:
        config = load_config(None, {"storage.data_dir": data_dir, **settings})
        store = await open_storage(config.storage, now)
        try:
            if with_certificate:
                await store.save_certificate(StoredCertificate(
                    name, cert_pem, key_pem, "https://acme.example/dir", now - 65 * DAY_MS,
                    now + 25 * DAY_MS))
            await store.save_renewal_state(RenewalState(
                name, attempts=3, next_attempt_ms=now + 3_600_000, last_attempt_ms=now,
                last_error="DNS problem: NXDOMAIN looking up A for chat.example.com"))
        finally:
            await store.close()

    asyncio.run(store_state(with_certificate=False))
    # No certificate yet: the self-signed fallback is served while renewal keeps failing.
    ensure_self_signed(data_dir / "tls")
    found = check_certificate(subject(data_dir, **settings))
    assert found.verdict is Verdict.WARN
    assert found.figures["serving"] == "self-signed"
    assert "renewal failing: 3 attempts, last error: DNS problem: NXDOMAIN" in found.summary
    asyncio.run(store_state(with_certificate=True))
    found = check_certificate(subject(data_dir, **settings))
    assert found.verdict is Verdict.WARN
    assert found.figures["serving"] == "acme"
    assert found.figures["days_left"] == pytest.approx(25, abs=0.1)
    assert "tidings cert renew --force" in found.fix


@pytest.mark.slow
def test_the_running_servers_report_is_what_counts(data_dir: Path) -> None:
    server = ServerProcess(data_dir)
    server.start()
    try:
        seen = examine(load_config(None, {"storage.data_dir": data_dir}),
                       SystemClock().wall_ms())
        assert seen.report is not None
        found = check_certificate(seen)
    finally:
        server.stop()
    assert found.verdict is Verdict.OK
    assert found.summary.startswith("self-signed certificate expires ")
    assert found.summary.endswith("days left); renewal none")
