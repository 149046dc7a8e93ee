"""Ed25519 signatures of SHA256SUMS, and the public keys this build trusts.

A release build embeds the signer's public key (packaging/release.sh passes
it to the PyInstaller spec as ``appliance/release/trusted.pem``); a
development build trusts no key and refuses every release, except that an
unfrozen checkout also reads ``TIDINGS_TRUSTED_KEYS`` (a PEM file) so that
tests can sign with a throwaway key.
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from appliance.errors import ReleaseError, VerificationError
from appliance.system.host import frozen

TRUSTED_RESOURCE: Final = "trusted.pem"
TRUSTED_ENV: Final = "TIDINGS_TRUSTED_KEYS"
SIGNATURE_BYTES: Final = 64
_PEM_END: Final = b"-----END PUBLIC KEY-----"


def load_public_keys(pem: bytes) -> list[Ed25519PublicKey]:
    """Every Ed25519 public key in a PEM file (one or more blocks)."""
    keys = []
    for block in pem.split(_PEM_END):
        if not block.strip():
            continue
        try:
            key = serialization.load_pem_public_key(block + _PEM_END)
        except ValueError as exc:
            raise ReleaseError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ReleaseError("a trusted release key is not an Ed25519 key")
        keys.append(key)
    return keys


def trusted_keys() -> list[Ed25519PublicKey]:
    """The release keys this build trusts (possibly none: a development build)."""
    pem = b""
    resource = resources.files("appliance.release").joinpath(TRUSTED_RESOURCE)
    if resource.is_file():
        pem += resource.read_bytes()
    override = os.environ.get(TRUSTED_ENV)
    if override and not frozen():
        with open(override, "rb") as handle:
            pem += b"\n" + handle.read()
    return load_public_keys(pem)


def verify(data: bytes, signature: bytes, keys: list[Ed25519PublicKey] | None = None) -> None:
    """Raise VerificationError unless one trusted key signed `data`."""
    keys = trusted_keys() if keys is None else keys
    if not keys:
        raise VerificationError("this build trusts no release key (a development build);"
                                " install a release of tidings to upgrade")
    if len(signature) != SIGNATURE_BYTES:
        raise VerificationError(f"signature is {len(signature)} bytes, not {SIGNATURE_BYTES}")
    for key in keys:
        try:
            key.verify(signature, data)
        except InvalidSignature:
            continue
        return
    raise VerificationError("signature does not verify with any trusted release key")


def sign(data: bytes, private_pem: bytes) -> bytes:
    """The raw Ed25519 signature of `data` (release tooling; never in the server)."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError("the signing key is not an Ed25519 private key")
    return key.sign(data)


def public_pem(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError("the signing key is not an Ed25519 private key")
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def new_private_pem() -> bytes:
    """A fresh Ed25519 private key in PEM (tests; `tidings release keygen`)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
