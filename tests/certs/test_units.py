"""The certificate manager's pure parts: schedule, configuration, challenge certificates."""

from __future__ import annotations

import hashlib
import random
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from appliance.certs.acme_client import _Pause, _retry_at_ms, translate
from appliance.certs.challenges import ACME_IDENTIFIER_OID, ChallengeAnswers
from appliance.certs.config import AcmeConfig, certificate_name, check, directory_url
from appliance.certs.keys import account_key, certificate_key, csr_for
from appliance.certs.schedule import backoff_ms, next_attempt_ms, renewal_due_ms
from appliance.config import load_config
from appliance.errors import CertificateError, ConfigError, RateLimitedError

DAY = 86_400_000


def test_renewal_is_due_with_a_third_of_the_lifetime_left() -> None:
    assert renewal_due_ms(0, 90 * DAY, 1 / 3) == 60 * DAY
    assert renewal_due_ms(0, 6 * DAY, 1 / 3) == 4 * DAY  # short-lived certificates too
    # The CA's renewal window (RFC 9773) wins when earlier, never when later.
    assert renewal_due_ms(0, 90 * DAY, 1 / 3, suggested_ms=10 * DAY) == 10 * DAY
    assert renewal_due_ms(0, 90 * DAY, 1 / 3, suggested_ms=80 * DAY) == 60 * DAY


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    rand = random.Random(7)
    waits = [backoff_ms(n, 60, 3600, rand) for n in range(1, 12)]
    assert 45_000 <= waits[0] <= 75_000
    assert 90_000 <= waits[1] <= 150_000
    assert all(w <= 3_600_000 for w in waits)
    assert waits[-1] >= 2_700_000  # reached the cap (minus jitter)
    assert len({backoff_ms(3, 60, 3600) for _ in range(20)}) > 1  # jittered


def test_a_retry_after_is_respected_over_the_backoff() -> None:
    now = 1_000_000
    assert next_attempt_ms(now, 1, 1, 10, retry_at_ms=now + 3_600_000) == now + 3_600_000
    assert now < next_attempt_ms(now, 1, 1, 10) <= now + 10_000


def test_polls_start_after_a_few_hundred_ms_slow_down_and_honour_retry_after() -> None:
    # RFC 8555 §7.5.1: not faster than that, 1.5 times slower each time up to 5 s,
    # and never before the CA's Retry-After.
    slept: list[float] = []
    pause = _Pause(time.monotonic() + 3600, slept.append)

    def late() -> CertificateError:
        return CertificateError("late")

    for _ in range(8):
        pause.wait(None, late)
    pause.wait("30", late)
    expected = [0.3, 0.45, 0.675, 1.0125, 1.51875, 2.278125, 3.4171875, 5.0]
    for got, want in zip(slept, expected, strict=False):
        assert want * 0.9 <= got <= want * 1.1
    assert 27 <= slept[-1] <= 33
    with pytest.raises(CertificateError, match="late"):
        _Pause(time.monotonic() - 1, slept.append).wait(None, late)


def test_retry_after_header_forms() -> None:
    assert _retry_at_ms("120", now=1000.0) == 1_120_000
    assert _retry_at_ms("Wed, 21 Oct 2026 07:28:00 GMT") == 1792567680000
    assert _retry_at_ms("soon") == 0
    assert _retry_at_ms(None) == 0


def test_a_rate_limit_problem_says_until_when() -> None:
    from acme import messages

    error = messages.Error(typ="urn:ietf:params:acme:error:rateLimited",
                           detail="too many certificates")
    error.retry_after = "3600"
    translated = translate(error, "https://ca.example/dir")
    assert isinstance(translated, RateLimitedError)
    assert translated.retry_at_ms > 0
    assert "rate-limited us until 20" in str(translated)
    assert translated.problem["type"] == "urn:ietf:params:acme:error:rateLimited"


@pytest.mark.parametrize(("values", "key"), [
    ({"hostnames": ["*.example.org"]}, "acme.hostnames"),
    ({"hostnames": ["Chat.Example.org"]}, "acme.hostnames"),
    ({"hostnames": ["localhost"]}, "acme.hostnames"),
    ({"issuers": ["http://ca.example/dir"]}, "acme.issuers"),
    ({"issuers": ["zerossl"]}, "acme.issuers"),
    ({"challenge": "dns-01"}, "acme.challenge"),
    ({"key_type": "ed25519"}, "acme.key_type"),
    ({"renew_remaining": 1.5}, "acme.renew_remaining"),
    ({"eab_kid": "kid-1"}, "acme.eab_hmac_key"),
    ({"retry_min_s": 0}, "acme.retry_min_s"),
])
def test_bad_acme_settings_name_their_key(values: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {f"acme.{k}": v for k, v in values.items()})
    assert caught.value.key_path == key


def test_acme_and_provided_files_exclude_each_other() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"acme.hostnames": ["chat.example.org"], "tls.cert": "/c",
                           "tls.key": "/k"})
    assert caught.value.key_path == "acme.hostnames"


def test_good_settings() -> None:
    config = AcmeConfig(hostnames=("b.example.org", "a.example.org"),
                        issuers=("letsencrypt-staging", "https://ca.example/dir"))
    check(config)
    assert certificate_name(config.hostnames) == "a.example.org,b.example.org"
    assert directory_url("letsencrypt").startswith("https://acme-v02.api.letsencrypt.org")
    assert directory_url("https://ca.example/dir") == "https://ca.example/dir"


def test_the_account_key_is_made_once_and_private(tmp_path: Path) -> None:
    first = account_key(tmp_path / "acme")
    path = tmp_path / "acme" / "account.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert account_key(tmp_path / "acme").thumbprint() == first.thumbprint()
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"


def test_certificate_keys_and_csr() -> None:
    ecdsa = serialization.load_pem_private_key(certificate_key("ecdsa"), None)
    assert isinstance(ecdsa, ec.EllipticCurvePrivateKey)
    pem = certificate_key("rsa")
    assert isinstance(serialization.load_pem_private_key(pem, None), rsa.RSAPrivateKey)
    csr = x509.load_pem_x509_csr(csr_for(pem, ("a.example.org", "b.example.org")))
    names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["a.example.org", "b.example.org"]


def test_tls_alpn01_certificate_follows_rfc_8737() -> None:
    answers = ChallengeAnswers()
    answers.put_tls_alpn01("chat.example.org", "token.thumb")
    cert_pem, _ = answers.tls_alpn01["chat.example.org"]
    cert = x509.load_pem_x509_certificate(cert_pem)
    ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    assert ext.critical
    assert ext.value.value == b"\x04\x20" + hashlib.sha256(b"token.thumb").digest()
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["chat.example.org"]
    answers.drop_tls_alpn01("chat.example.org")
    assert not answers.tls_alpn01


def test_http01_answers_only_challenge_paths() -> None:
    answers = ChallengeAnswers()
    answers.put_http01("tok_123", "tok_123.thumb")
    assert answers.http01_answer(b"/.well-known/acme-challenge/tok_123") == b"tok_123.thumb"
    assert answers.http01_answer(b"/.well-known/acme-challenge/other") is None
    assert answers.http01_answer(b"/.well-known/acme-challenge/") is None
    assert answers.http01_answer(b"/tok_123") is None
    assert answers.http01_answer(b"/.well-known/acme-challenge/" + b"x" * 10_000) is None
    answers.drop_http01("tok_123")
    assert answers.http01_answer(b"/.well-known/acme-challenge/tok_123") is None
