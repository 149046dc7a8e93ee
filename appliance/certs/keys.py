"""Keys: the ACME account key (made once, kept 0600) and fresh certificate keys.

The account key is ECDSA P-256 signing ES256 JWS (RFC 8555 §6.2, RFC 7518
§3.4); certificate keys are new for every certificate, like certmagic's
one-time keys, so a key leaked from an old certificate signs nothing new.
"""

from __future__ import annotations

import os
from pathlib import Path

from acme import crypto_util
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy import jwk

from appliance.errors import ConfigError

ACCOUNT_KEY_NAME = "account.key"
_RSA_BITS = 2048


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, readable by the owner only (0600).

    The temporary file is created 0600 before a byte is written, then renamed
    over `path`: a reader sees the old file or the new one, never a mix.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def account_key(directory: Path) -> jwk.JWKEC:
    """The account key in `directory`, created (0600) on first use.

    Raises:
        ConfigError: it cannot be read or written (key ``storage.data_dir``).
    """
    path = directory / ACCOUNT_KEY_NAME
    try:
        if path.is_file():
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ConfigError(f"{path} is not an ECDSA key; move it away to make a new"
                                  " account", key_path="storage.data_dir")
            return jwk.JWKEC(key=loaded)
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(path, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        return jwk.JWKEC(key=key)
    except OSError as exc:
        raise ConfigError(f"cannot keep the ACME account key {path}: {exc.strerror}",
                          key_path="storage.data_dir") from None
    except ValueError as exc:
        raise ConfigError(f"cannot read the ACME account key {path}: {exc}",
                          key_path="storage.data_dir") from None


def certificate_key(key_type: str) -> bytes:
    """A new private key (PEM, PKCS#8): ECDSA P-256, or RSA 2048 for ``"rsa"``."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def csr_for(key_pem: bytes, hostnames: tuple[str, ...]) -> bytes:
    """A CSR (PEM) naming every hostname as a SAN (RFC 8555 §7.4)."""
    return crypto_util.make_csr(key_pem, list(hostnames))
