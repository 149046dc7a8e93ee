"""When a served certificate file expires: for `/metrics`, `tidings status` and `doctor`.

A served file is PEM, either the certificate then its chain (``tls.cert``) or
the key then the chain (the ACME bundle): the leaf is the first certificate
block, whatever precedes it.
"""

from __future__ import annotations

import re
from pathlib import Path

from cryptography import x509

from appliance.errors import UsageError

_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.S)
#: A served file is a key and a chain of a few certificates; past this it is not one.
MAX_PEM_BYTES = 1024 * 1024


def leaf_not_after_ms(pem: bytes) -> int:
    """The notAfter of the first certificate in `pem`, in epoch milliseconds.

    Raises:
        UsageError: no certificate block, or one that does not parse.
    """
    match = _BLOCK.search(pem[:MAX_PEM_BYTES])
    if match is None:
        raise UsageError("no PEM certificate found")
    try:
        cert = x509.load_pem_x509_certificate(match.group(0))
    except ValueError as exc:
        raise UsageError(f"the certificate does not parse: {exc}") from None
    return int(cert.not_valid_after_utc.timestamp() * 1000)


class ExpiryCache:
    """`leaf_not_after_ms` of a file, read again only when its size or mtime changes."""

    def __init__(self) -> None:
        self._key: tuple[str, int, int] | None = None
        self._value: int | None = None

    def not_after_ms(self, path: Path) -> int | None:
        """The file's leaf notAfter; None when it cannot be read or parsed."""
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key != self._key:
            try:
                with path.open("rb") as f:
                    self._value = leaf_not_after_ms(f.read(MAX_PEM_BYTES))
            except (OSError, UsageError):
                self._value = None
            self._key = key
        return self._value
