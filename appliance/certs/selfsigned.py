"""A self-signed certificate, generated once and kept in the data directory (SPEC M13).

Used when the configuration names no certificate, so TLS works from the first
start; clients must trust it explicitly (or the operator configures a real
one, later from ACME).  ECDSA P-256: small, fast handshakes, accepted by every
current TLS stack.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.errors import ConfigError

CERT_NAME, KEY_NAME = "self-signed.crt", "self-signed.key"
_VALID_DAYS = 825  # the longest lifetime Apple platforms accept for a TLS server certificate


def ensure_self_signed(directory: Path, now: dt.datetime | None = None) -> tuple[Path, Path]:
    """(certificate, key) paths in `directory`, creating them on first use.

    Raises:
        ConfigError: the directory cannot be written (key ``storage.data_dir``).
    """
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    hostname = socket.gethostname()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tidings (self-signed)")])
    names: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # The key is written 0600 before any byte of it exists on disk.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise ConfigError(f"cannot write the self-signed certificate in {directory}:"
                          f" {exc.strerror}", key_path="storage.data_dir") from None
    return cert_path, key_path
