"""The leaf's notAfter of a served PEM file (certificate first, or the ACME bundle's key first)."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest

from appliance.certs.expiry import ExpiryCache, leaf_not_after_ms
from appliance.errors import UsageError


def _openssl_pair(tmp_path: Path, days: int, name: str) -> tuple[bytes, bytes]:
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", str(days), "-subj", f"/CN={name}"],
                   check=True, capture_output=True, timeout=30)
    return cert.read_bytes(), key.read_bytes()


def _days_left(ms: int) -> float:
    return (ms / 1000 - dt.datetime.now(dt.UTC).timestamp()) / 86400


def test_the_first_certificate_is_the_leaf_whatever_precedes_it(tmp_path: Path) -> None:
    leaf, key = _openssl_pair(tmp_path, 30, "leaf")
    other, _ = _openssl_pair(tmp_path, 400, "issuer")
    for pem in (leaf + other, key + leaf + other):  # tls.cert; the ACME bundle
        assert 29.9 < _days_left(leaf_not_after_ms(pem)) <= 30


@pytest.mark.parametrize("pem", [b"", b"not a certificate",
                                 b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_no_usable_certificate_is_a_usage_error(pem: bytes) -> None:
    with pytest.raises(UsageError):
        leaf_not_after_ms(pem)


def test_the_cache_reads_a_replaced_file_again(tmp_path: Path) -> None:
    path = tmp_path / "served.pem"
    cache = ExpiryCache()
    assert cache.not_after_ms(path) is None  # missing
    path.write_bytes(_openssl_pair(tmp_path, 10, "first")[0])
    first = cache.not_after_ms(path)
    assert first is not None
    assert 9.9 < _days_left(first) <= 10
    path.write_bytes(_openssl_pair(tmp_path, 90, "renewed")[0] + b"\n")  # size changes too
    renewed = cache.not_after_ms(path)
    assert renewed is not None
    assert 89.9 < _days_left(renewed) <= 90
    path.write_bytes(b"garbage")
    assert cache.not_after_ms(path) is None
