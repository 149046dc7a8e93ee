"""The issued certificate on disk, for the TLS context and for operators.

`bundle.pem` (key then chain, 0600) is what the server loads: one file, one
atomic rename, so a reload never pairs a new certificate with an old key.
`fullchain.pem` and `privkey.pem` are written beside it for other software
on the machine (nginx, a mail server) that wants the usual pair.
"""

from __future__ import annotations

from pathlib import Path

from appliance.certs.keys import write_private

BUNDLE_NAME = "bundle.pem"


class CertificateFiles:
    """One certificate's directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, fullchain_pem: bytes, key_pem: bytes) -> Path:
        """Write the files atomically (each 0600); returns the bundle's path.

        Raises:
            OSError: the directory cannot be written.
        """
        key = key_pem if key_pem.endswith(b"\n") else key_pem + b"\n"
        bundle = self.directory / BUNDLE_NAME
        write_private(self.directory / "privkey.pem", key)
        write_private(self.directory / "fullchain.pem", fullchain_pem)
        write_private(bundle, key + fullchain_pem)
        return bundle
