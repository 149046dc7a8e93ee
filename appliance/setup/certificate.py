"""The operator's own certificate files: they parse, match, are valid now and cover the name.

Every check the server would otherwise fail at start (or, worse, a client at
connect) is done here first, each refusal naming the ``cert`` or ``key``
question.  The last check is the server's own TLS stack loading the pair
(`ssl.SSLContext.load_cert_chain`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import pwd
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from appliance.errors import AnswerError
from appliance.setup.answers import CERT, KEY, Question

#: A certificate chain or key file is a few KiB; this bounds what is read.
MAX_PEM_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What the checks learnt about a certificate."""

    names: tuple[str, ...]
    not_after: dt.datetime
    #: curl's ``--pinnedpubkey`` value: ``sha256//`` + base64 of the SPKI's SHA-256.
    pin: str


def absolute(raw: str) -> str:
    """A file answer as an absolute path (the service runs elsewhere); symlinks kept,
    so that a renewed /etc/letsencrypt/live/... link is followed at each load."""
    return os.path.abspath(os.path.expanduser(raw.strip()))


def check_certificate(cert: str, hostname: str, now: dt.datetime) -> CertificateFacts:
    """Check a certificate file (PEM chain, leaf first) for `hostname` at `now`.

    Raises:
        AnswerError: naming ``cert``: unreadable, not PEM, not valid at `now`,
            not covering `hostname`.
    """
    leaf = _certificates(Path(cert))[0]
    if now < leaf.not_valid_before_utc:
        start = f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M}"
        raise AnswerError(f"{cert} is not valid before {start} UTC (is this machine's clock"
                          " right?)", question=CERT.key)
    if now >= leaf.not_valid_after_utc:
        raise AnswerError(f"{cert} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
                          question=CERT.key,
                          fix=f"renew it and give {CERT.flag} the new one, or use --tls acme")
    names = dns_names(leaf)
    if not covers(names, hostname):
        shown = ", ".join(names[:5]) or "no DNS name"
        raise AnswerError(f"{cert} is for {shown}, not {hostname}", question=CERT.key,
                          fix=f"give {CERT.flag} a certificate for {hostname}, or change"
                              " --hostname")
    return CertificateFacts(names, leaf.not_valid_after_utc, pin_of(leaf))


def check_key(cert: str, key: str) -> None:
    """Check that `key` is the unencrypted private key of the certificate in `cert`, and
    that the server's TLS stack loads the pair.

    Raises:
        AnswerError: naming ``key`` (or ``cert`` when the TLS stack refuses the pair).
    """
    leaf = _certificates(Path(cert))[0]
    private = _private_key(Path(key))
    if spki(leaf.public_key()) != spki(private.public_key()):
        raise AnswerError(f"the key {key} does not belong to the certificate {cert}",
                          question=KEY.key, fix=f"give {KEY.flag} the certificate's own key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise AnswerError(f"the TLS stack refuses {cert} with {key}: {exc}",
                          question=CERT.key) from None


def check_service_can_read(question: Question, path: str, user: str) -> None:
    """Refuse a file the service's user could not read (a root-only /etc/letsencrypt).

    Raises:
        AnswerError: naming `question`.
    """
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return
    gids = {account.pw_gid, *os.getgrouplist(user, account.pw_gid)}
    if not readable_by(path, account.pw_uid, gids):
        raise AnswerError(f"the service's user {user!r} cannot read {path}",
                          question=question.key,
                          fix=f"chgrp {user} {path} && chmod g+r {path} (and g+x on its"
                              " directories), or copy it where the service can read it")


def _read(path: Path, question: Question) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise AnswerError(f"cannot read {path}: {exc.strerror}", question=question.key,
                          fix=f"give {question.flag} a readable PEM file") from None
    if len(data) > MAX_PEM_BYTES:
        raise AnswerError(f"{path} is larger than {MAX_PEM_BYTES} bytes: not a PEM file",
                          question=question.key)
    return data


def _certificates(path: Path) -> list[x509.Certificate]:
    data = _read(path, CERT)
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        chain = []
    if not chain:
        raise AnswerError(f"{path} does not parse as a PEM certificate", question=CERT.key,
                          fix=f"give {CERT.flag} the certificate (-----BEGIN CERTIFICATE-----),"
                              " its chain after it")
    return chain


def _private_key(path: Path) -> PrivateKeyTypes:
    data = _read(path, KEY)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted
        raise AnswerError(f"{path} is protected by a passphrase: the service cannot unlock it",
                          question=KEY.key,
                          fix="decrypt it (openssl pkey -in KEY -out KEY.plain), keep it 0600"
                          ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise AnswerError(f"{path} does not parse as a PEM private key", question=KEY.key,
                          fix=f"give {KEY.flag} the key (-----BEGIN PRIVATE KEY-----)") from None


def spki(public_key: object) -> bytes:
    """The DER SubjectPublicKeyInfo of a public key."""
    return public_key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def pin_of(cert: x509.Certificate) -> str:
    """The certificate's public-key pin (RFC 7469 §2.4 form, as curl's --pinnedpubkey)."""
    digest = hashlib.sha256(spki(cert.public_key())).digest()
    return "sha256//" + base64.b64encode(digest).decode()


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The certificate's DNS subjectAltNames (clients ignore the CN: RFC 9110 §4.3.4)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))


def covers(names: tuple[str, ...], hostname: str) -> bool:
    """Whether `names` cover `hostname`; a wildcard only for one left-most label (RFC 6125)."""
    for name in names:
        if name == hostname:
            return True
        if name.startswith("*.") and "." in hostname \
                and hostname.split(".", 1)[1] == name[2:]:
            return True
    return False


def readable_by(path: str, uid: int, gids: set[int]) -> bool:
    """Whether user `uid` (in groups `gids`) may read `path` by its mode bits (ACLs not seen).

    Both the path as given and the file it resolves to are walked: every
    directory on the way needs search permission.
    """
    if uid == 0:
        return True
    for candidate in {path, os.path.realpath(path)}:
        target = Path(candidate)
        for directory in target.parents:
            if not _permits(directory, uid, gids, 0o1):
                return False
        if not _permits(target, uid, gids, 0o4):
            return False
    return True


def _permits(path: Path, uid: int, gids: set[int], bit: int) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_uid == uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in gids:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)
