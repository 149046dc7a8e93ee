"""Which release to install: fetched, verified, and compared with what runs.

Nothing here changes the machine.  The three small files are fetched first
and verified (the signature of SHA256SUMS by a key this build trusts, the
manifest against its line there) before any decision is taken from them.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from enum import Enum
from typing import Final

from appliance.errors import ReleaseError, VerificationError
from appliance.release.manifest import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    MAX_SUMS_BYTES,
    SIGNATURE,
    SUMS,
    Manifest,
    executable_name,
    parse_version,
)
from appliance.release.signature import SIGNATURE_BYTES
from appliance.release.verify import verified_manifest
from appliance.upgrade.fetch import Fetcher

_ARCHES: Final = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def machine_arch() -> str:
    """This machine's architecture as releases name it.

    Raises:
        ReleaseError: one no release is built for.
    """
    machine = platform.machine().lower()
    if machine not in _ARCHES:
        raise ReleaseError(f"no releases for this architecture ({machine})")
    return _ARCHES[machine]


@dataclass(frozen=True, slots=True)
class Release:
    """A verified release and where its executable is."""

    manifest: Manifest
    sums: dict[str, str]
    executable: str
    executable_url: str

    @property
    def version(self) -> str:
        return self.manifest.version


def fetch_release(fetcher: Fetcher, version: str | None) -> Release:
    """Fetch and verify the release `version` (None: the latest).

    Raises:
        ReleaseError: unreachable or malformed.
        VerificationError: not signed by a trusted key, or its files disagree.
    """
    if version is not None:
        parse_version(version)
    sums = fetcher.get(fetcher.url(version, SUMS), MAX_SUMS_BYTES)
    signature = fetcher.get(fetcher.url(version, SIGNATURE), SIGNATURE_BYTES)
    manifest_bytes = fetcher.get(fetcher.url(version, MANIFEST), MAX_MANIFEST_BYTES)
    manifest, table = verified_manifest(sums, signature, manifest_bytes)
    if version is not None and manifest.version != version:
        raise VerificationError(f"asked for {version}, the release says it is"
                                f" {manifest.version}")
    name = executable_name(machine_arch())
    if name not in manifest.files:
        raise ReleaseError(f"release {manifest.version} has no {name}")
    return Release(manifest, table, name, fetcher.url(version, name))


class Verdict(Enum):
    UPGRADE = "upgrade"
    CURRENT = "current"
    DOWNGRADE = "downgrade"
    TOO_OLD = "too old"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    message: str

    @property
    def proceed(self) -> bool:
        return self.verdict is Verdict.UPGRADE


def decide(current: str, manifest: Manifest, *, allow_downgrade: bool) -> Decision:
    """Whether to install `manifest` over `current`, and why (or why not)."""
    have, offer = parse_version(current), parse_version(manifest.version)
    if have < parse_version(manifest.upgrades_from):
        return Decision(Verdict.TOO_OLD, f"tidings {manifest.version} upgrades from"
                        f" {manifest.upgrades_from} or later; this is {current}: upgrade to"
                        f" {manifest.upgrades_from} first (tidings upgrade --version"
                        f" {manifest.upgrades_from})")
    if offer == have and not allow_downgrade:
        return Decision(Verdict.CURRENT, f"already up to date (tidings {current})")
    if offer < have and not allow_downgrade:
        return Decision(Verdict.DOWNGRADE, f"tidings {manifest.version} is older than the"
                        f" installed {current}: refused (--allow-downgrade to install it)")
    return Decision(Verdict.UPGRADE, f"tidings {current} -> {manifest.version}")
