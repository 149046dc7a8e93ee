"""Issue 12, finding 8: REST inputs, scoping and paging, through a real server.

`/v1/stats` counts only the caller's app (the server-wide figures need the
operator key); path segments are percent-decoded; addresses are one rule
(NFC, no invisible characters) for REST, the CLI and lookups; group names
are bounded; `GET /v1/groups` is paged.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.client import Client
from tests.support.hostile import HONEST_APP, HONEST_USERS
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


class Api:
    def __init__(self, server: ServerProcess, secret: str) -> None:
        self.server = server
        self.secret = secret

    def call(self, method: str, path: str, body: Any = None, *, secret: str | None = None,
             ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers={"Authorization": f"Bearer {secret or self.secret}"})
            response = conn.getresponse()
            payload = response.read()
            return response.status, json.loads(payload) if payload else None
        finally:
            conn.close()


def _cli(data: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(data), *args],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


@pytest.fixture
def api(data_dir: Path) -> Iterator[Api]:
    secret = _cli(data_dir, "app", "secret")
    server = ServerProcess(data_dir)
    server.start()
    try:
        yield Api(server, secret)
    finally:
        server.stop()
    assert "Traceback" not in server.output, server.output


def test_stats_count_only_the_callers_app_and_the_operator_sees_everything(
        data_dir: Path) -> None:
    other, _ = provision(data_dir, HONEST_USERS, app=HONEST_APP)
    mine, _ = provision(data_dir, ["alice"])
    secret = _cli(data_dir, "app", "secret")
    key = _cli(data_dir, "operator", "key")
    server = ServerProcess(data_dir)
    server.start()
    api = Api(server, secret)
    try:
        async def go() -> None:
            clients = [await Client.connect(server.host, server.port, other[u], "d")
                       for u in HONEST_USERS]
            clients.append(await Client.connect(server.host, server.port, other["honest-a"],
                                                "second"))
            clients.append(await Client.connect(server.host, server.port, mine["alice"], "d"))
            try:
                status, stats = await asyncio.to_thread(api.call, "GET", "/v1/stats")
                assert (status, stats) == (200, {"sessions": 1, "users_online": 1})
                status, whole = await asyncio.to_thread(api.call, "GET", "/v1/operator/stats",
                                                        secret=key)
                assert status == 200
                assert whole["sessions"] == 4
                assert whole["connections"] >= 4
                assert "commits" in whole
                assert whole["credential_closes"] == 0
                assert whole["refusals"] == {}  # nothing refused yet
                # The edge's refusal counters are operator figures too (issue 12).
                assert whole["edge"]["accepted"] >= 4
                assert "refused_filter" in whole["edge"]
                status, _ = await asyncio.to_thread(api.call, "GET", "/v1/operator/stats")
                assert status == 401  # an app secret is not the operator key
            finally:
                for c in clients:
                    await c.close()

        asyncio.run(go())
        _, doc = api.call("GET", "/v1/openapi.json")
        assert doc["paths"]["/v1/operator/stats"]["get"]["security"] == [{"operatorKey": []}]
    finally:
        server.stop()


def test_addresses_with_slashes_and_non_ascii_are_managed_by_percent_encoded_paths(
        api: Api) -> None:
    for address in ("a/b", "zoë", "渡辺", "x?y#z%"):
        assert api.call("POST", "/v1/users", {"address": address})[0] == 201
        path = f"/v1/users/{quote(address, safe='')}"
        status, token = api.call("POST", f"{path}/tokens", {"ttl_s": 60})
        assert status == 201, (address, token)
        status, renamed = api.call("PATCH", path, {"address": address + "2"})
        assert (status, renamed["address"]) == (200, address + "2")
        assert api.call("DELETE", f"/v1/users/{quote(address + '2', safe='')}")[0] == 204
    status, problem = api.call("DELETE", "/v1/users/%FF%FE")
    assert status == 400, problem
    assert api.call("GET", "/v1/users")[1]["users"] == []


def test_addresses_are_nfc_and_invisible_characters_are_refused(api: Api) -> None:
    decomposed, composed = "zoe\u0308", "zo\u00eb"
    status, user = api.call("POST", "/v1/users", {"address": decomposed})
    assert (status, user["address"]) == (201, composed)
    status, problem = api.call("POST", "/v1/users", {"address": composed})
    assert status == 409, problem  # the same user, however it is typed
    # Lookups apply the same rule: the decomposed form finds the user.
    assert api.call("POST", f"/v1/users/{quote(decomposed)}/tokens", {})[0] == 201
    for bad in ("ev\u202eil", "a\u200bb", "a\u200db", "\ufeffa", "a\u2028b", "a\x00b",
                "a\u061cb", "a\u2066b"):
        status, problem = api.call("POST", "/v1/users", {"address": bad})
        assert (status, problem["field"]) == (422, "address"), (bad, problem)
        assert "U+" in problem["detail"]
    # The CLI applies the one rule too.
    cli = subprocess.run([sys.executable, "-m", "appliance", "--data-dir",
                          str(api.server.data_dir), "user", "add", "b\u202ead"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode != 0
    assert "U+202E" in cli.stderr


def test_group_names_are_bounded_and_groups_are_paged(api: Api) -> None:
    assert api.call("POST", "/v1/groups", {"name": "n" * 255})[0] == 201
    for name in ("n" * 256, "é" * 128, "", "a\u202eb"):
        status, problem = api.call("POST", "/v1/groups", {"name": name})
        assert (status, problem["field"]) == (422, "name"), problem
    ids = [api.call("POST", "/v1/groups", {"name": f"g{i}"})[1]["id"] for i in range(5)]
    seen: list[int] = []
    after = ""
    while True:
        status, page = api.call("GET", f"/v1/groups?limit=2{after}")
        assert status == 200
        assert len(page["groups"]) <= 2
        seen += [g["id"] for g in page["groups"]]
        if page["next"] is None:
            break
        after = f"&after={page['next']}"
    assert seen[1:] == ids
    for query in ("limit=0", "limit=1001", "limit=" + "9" * 5000, "after=-1", "after=x"):
        status, problem = api.call("GET", f"/v1/groups?{query}")
        assert status == 422, (query, problem)
    assert api.call("GET", "/v1/groups/" + "9" * 5000)[0] == 404
    assert api.call("GET", "/v1/users?limit=" + "9" * 5000)[0] == 422
