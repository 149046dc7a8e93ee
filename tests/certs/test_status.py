"""The served certificate's figures: expiry read from real PEM files, renewal state."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from appliance.certs.config import AcmeConfig
from appliance.certs.keys import certificate_key
from appliance.certs.selfsigned import ensure_self_signed
from appliance.certs.status import pem_not_after_ms, served
from appliance.status.report import Certificate
from appliance.storage.models import RenewalState, StoredCertificate

DAY_MS = 86_400_000


def test_expiry_of_a_pem_file_and_of_a_key_then_chain_bundle(tmp_path: Path) -> None:
    made = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert, key = ensure_self_signed(tmp_path / "tls", made)
    expected = int((made + dt.timedelta(days=825)).timestamp() * 1000)
    assert pem_not_after_ms(cert) == expected
    bundle = tmp_path / "bundle.pem"  # what ACME installs: the key first, then the chain
    bundle.write_bytes(key.read_bytes() + cert.read_bytes())
    assert pem_not_after_ms(bundle) == expected
    assert pem_not_after_ms(tmp_path / "absent.pem") == 0
    (tmp_path / "key-only.pem").write_bytes(certificate_key("ecdsa"))
    assert pem_not_after_ms(tmp_path / "key-only.pem") == 0
    (tmp_path / "garbage.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
    assert pem_not_after_ms(tmp_path / "garbage.pem") == 0


def test_renewal_state_by_what_is_served() -> None:
    assert served("provided", 5) == Certificate("provided", 5, "manual")
    assert served("self-signed", 5) == Certificate("self-signed", 5, "none")
    acme = AcmeConfig(hostnames=("chat.example.com",))
    now = 1_800_000_000_000
    cert = StoredCertificate("chat.example.com", b"", b"", "https://ca", now - 60 * DAY_MS,
                             now + 30 * DAY_MS)
    fine = served("acme", cert.not_after_ms, acme, cert, RenewalState(cert.name))
    # Renewed when a third of its 90 days is left: in 0 days (now).
    assert (fine.renewal, fine.failed_attempts, fine.next_renewal_ms) == ("automatic", 0, now)
    failing = served("acme", cert.not_after_ms, acme, cert, RenewalState(
        cert.name, attempts=2, next_attempt_ms=now + 3_600_000, last_error="timeout"))
    assert (failing.renewal, failing.failed_attempts, failing.last_error,
            failing.next_renewal_ms) == ("failing", 2, "timeout", now + 3_600_000)
    # ACME on, nothing obtained yet: the fallback is served, the attempts are reported.
    waiting = served("self-signed", 7, acme, None, RenewalState(cert.name, attempts=1))
    assert (waiting.serving, waiting.renewal) == ("self-signed", "failing")
