"""The answers the appliance serves while a CA validates a hostname (RFC 8555 §8).

The ACME client (in a worker thread) publishes answers here; the listeners
(on the event loop) read them:

- HTTP-01 (RFC 8555 §8.3): ``GET /.well-known/acme-challenge/<token>`` on the
  plain-HTTP port answers the key authorization.
- TLS-ALPN-01 (RFC 8737): a TLS handshake on the main port that offers ALPN
  ``acme-tls/1`` for a hostname gets a self-signed certificate for it whose
  critical id-pe-acmeIdentifier extension holds SHA-256(key authorization).

Plain dicts replaced whole, never mutated in place, so a reader on another
thread sees the old mapping or the new one (one reference assignment).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

#: The ALPN protocol name a TLS-ALPN-01 validation offers (RFC 8737 §6.2).
ACME_TLS_ALPN = "acme-tls/1"
#: id-pe-acmeIdentifier (RFC 8737 §6.1).
ACME_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
HTTP01_PREFIX = b"/.well-known/acme-challenge/"
#: Tokens are base64url, at least 128 bits of entropy (RFC 8555 §8.3): 22+ chars.
MAX_TOKEN_BYTES = 256
_BASE64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


#: Publishes an answer to the other processes on the store (name, key
#: authorization; None withdraws it); blocks until done.  Called from the
#: ACME worker thread before the CA is told to validate.
Publisher = Callable[[str, "str | None"], None]


class ChallengeAnswers:
    """The HTTP-01 and TLS-ALPN-01 answers being served now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # writers only; readers take a snapshot reference
        self.http01: dict[bytes, bytes] = {}
        #: hostname -> (certificate PEM, key PEM)
        self.tls_alpn01: dict[str, tuple[bytes, bytes]] = {}
        self.publish: Publisher | None = None

    def _share(self, name: str, key_authorization: str | None) -> None:
        if self.publish is not None:
            self.publish(name, key_authorization)

    def http01_answer(self, target: bytes) -> bytes | None:
        """The body for a request to `target` on the HTTP port, if this process has it."""
        token = http01_token(target)
        return None if token is None else self.http01.get(token)

    def put_http01(self, token: str, key_authorization: str) -> None:
        with self._lock:
            self.http01 = {**self.http01, token.encode(): key_authorization.encode()}
        self._share(f"http-01:{token}", key_authorization)

    def drop_http01(self, token: str) -> None:
        with self._lock:
            self.http01 = {k: v for k, v in self.http01.items() if k != token.encode()}
        self._share(f"http-01:{token}", None)

    def put_tls_alpn01(self, hostname: str, key_authorization: str) -> None:
        pair = tls_alpn01_certificate(hostname, key_authorization)
        with self._lock:
            self.tls_alpn01 = {**self.tls_alpn01, hostname: pair}
        self._share(f"tls-alpn-01:{hostname}", key_authorization)

    def drop_tls_alpn01(self, hostname: str) -> None:
        with self._lock:
            self.tls_alpn01 = {k: v for k, v in self.tls_alpn01.items() if k != hostname}
        self._share(f"tls-alpn-01:{hostname}", None)


def http01_token(target: bytes) -> bytes | None:
    """The token of an HTTP-01 request target, or None if it is none (RFC 8555 §8.3)."""
    if not target.startswith(HTTP01_PREFIX):
        return None
    token = target[len(HTTP01_PREFIX):]
    if not token or len(token) > MAX_TOKEN_BYTES or not _BASE64URL.issuperset(token):
        return None
    return token


def tls_alpn01_certificate(hostname: str, key_authorization: str,
                           now: dt.datetime | None = None) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) answering a TLS-ALPN-01 challenge (RFC 8737 §3).

    One SAN, the hostname; the critical acmeIdentifier extension holds the DER
    OCTET STRING of SHA-256(key authorization).
    """
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode()).digest()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER_OID,
                                                      b"\x04\x20" + digest), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
