"""A throwaway release key this checkout trusts, and a release server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.release.signature import TRUSTED_ENV
from tests.upgrade.signed import Keys, ReleaseServer


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


@pytest.fixture
def trusted(keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The throwaway key trusted by this process and the `tidings` it spawns."""
    pem = tmp_path / "trusted.pem"
    pem.write_bytes(keys.public)
    monkeypatch.setenv(TRUSTED_ENV, str(pem))
    return pem


@pytest.fixture
def release_server() -> Iterator[ReleaseServer]:
    with ReleaseServer().running() as server:
        yield server
