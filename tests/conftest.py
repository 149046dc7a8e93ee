"""Shared fixtures: a real `tidings serve` process on 127.0.0.1, port 0."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mariadb import MariaDBServer
from tests.support.releases import Releases, release_set
from tests.support.server import ServerProcess


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def server(data_dir: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(data_dir)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def tidings(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the `tidings` CLI on a data directory."""
    return subprocess.run(
        [sys.executable, "-m", "appliance", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, check=check, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    """One real MariaDB server for the session (fails under CI=true if not installed)."""
    server = MariaDBServer(tmp_path_factory.mktemp("mariadb"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class StoreBackend:
    """Which store a test's data directory uses; `prepare` points one at it."""

    def __init__(self, name: str, request: pytest.FixtureRequest) -> None:
        self.name = name
        self._request = request

    def prepare(self, data_dir: Path) -> None:
        """SQLite needs nothing; MariaDB gets a fresh database on the session's server."""
        if self.name == "mariadb":
            self._request.getfixturevalue("mariadb").use_in(data_dir, "e2e")


@pytest.fixture(params=["sqlite", "mariadb"])
def store_backend(request: pytest.FixtureRequest) -> StoreBackend:
    """Runs a test once on each storage backend (SPEC M14)."""
    return StoreBackend(request.param, request)


@pytest.fixture(scope="session")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    """Signed releases N, N+1 and a broken N+1' of this checkout, served on 127.0.0.1
    (tests/support/releases.py: a minute a build, cached between runs)."""
    with release_set(tmp_path_factory) as served:
        yield served
