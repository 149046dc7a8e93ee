"""A real server with users and a group, for the SDK tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.sdk import Client
from tests.support.provision import provision
from tests.support.server import ServerProcess

USERS = ["alice", "bob", "carol"]


@dataclass
class World:
    server: ServerProcess
    tokens: dict[str, str]
    groups: dict[str, int]
    tmp: Path

    def client(self, user: str, store: str | None = None, **kwargs: object) -> Client:
        path = self.tmp / (store or f"{user}.db")
        return Client(self.server.host, self.server.port, self.tokens[user], store=path,
                      **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    data = tmp_path / "data"
    data.mkdir()
    tokens, groups = provision(data, USERS, {"team": USERS})
    server = ServerProcess(data)
    server.start()
    try:
        yield World(server, tokens, groups, tmp_path)
    finally:
        server.stop()
