"""Checking a downloaded release before anything is changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance.errors import VerificationError
from appliance.release.manifest import MANIFEST, Manifest, parse_sums
from appliance.release.signature import verify


def verified_manifest(
        sums: bytes, signature: bytes, manifest: bytes,
        keys: list[Ed25519PublicKey] | None = None) -> tuple[Manifest, dict[str, str]]:
    """The manifest, once the signature of the sums and the manifest's sum check out.

    Raises:
        VerificationError: bad signature or sum.
        ReleaseError: malformed files.
    """
    verify(sums, signature, keys)
    table = parse_sums(sums)
    if table.get(MANIFEST) != hashlib.sha256(manifest).hexdigest():
        raise VerificationError(f"{MANIFEST} does not match its line in SHA256SUMS")
    parsed = Manifest.from_json(manifest)
    for name, entry in parsed.files.items():
        if table.get(name) != entry.sha256:
            raise VerificationError(f"{name}: manifest and SHA256SUMS disagree")
    return parsed, table


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: Path, expected_sha256: str, expected_size: int) -> None:
    """Raise VerificationError unless `path` has this size and sha256."""
    size = path.stat().st_size
    if size != expected_size:
        raise VerificationError(f"{path.name}: {size} bytes, the manifest says {expected_size}")
    if sha256_file(path) != expected_sha256:
        raise VerificationError(f"{path.name}: sha256 does not match the signed sums")
