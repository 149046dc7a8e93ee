"""What the preview tests share: an injectable resolver, a test policy, configs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ssl
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.errors import PreviewFetchError
from appliance.media.config import PreviewConfig
from appliance.media.previews.address import AddressPolicy, IPAddress

#: The test servers listen on 127.0.0.1: this policy calls that one address
#: public (and nothing else of 127/8), as the issue asks.
LOOPBACK_IS_PUBLIC = ("127.0.0.1/32",)


class FakeResolver:
    """Answers from a table; `answers[host]` is a list of successive answers (the last repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int, owner: int = 0) -> list[IPAddress]:
        self.calls.append((host, port))  # as asked: absolute names end with "."
        name = host.removesuffix(".")
        series = self.answers.get(name)
        if not series:
            raise PreviewFetchError(f"{name} does not resolve")
        asked = sum(1 for h, _ in self.calls if h.removesuffix(".") == name)
        return [ip_address(a) for a in series[min(asked, len(series)) - 1]]


def public_loopback_policy(*extra: str) -> AddressPolicy:
    """The default rule, but 127.0.0.1 (the test servers' address) counts as public."""
    return AddressPolicy((*LOOPBACK_IS_PUBLIC, *extra))


def config(port: int = 0, **changes: Any) -> PreviewConfig:
    """Small limits so hostile servers are cut fast; `port` is the test server's."""
    base = PreviewConfig(timeout_s=2.0, max_html_bytes=256 * 1024, max_image_bytes=512 * 1024,
                         ports=(port,) if port else ())
    return dataclasses.replace(base, **changes)


def tls_pair(directory: Path, names: tuple[str, ...]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A test CA: (the server's context with a certificate for `names`, a client context
    trusting that CA only)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tidings test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(
        cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client
