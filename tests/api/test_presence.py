"""Presence, privacy, contacts and blocks over REST: a real server, http.client.

Attacks first: another app's secret or user never reaches these users; a
user's token sees only what that user may; a hidden user and an unknown
address answer alike; malformed bodies are 422 problems, never a 500.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


@dataclass
class Api:
    server: ServerProcess
    secret: str
    other_secret: str
    tokens: dict[str, str]

    def call(self, method: str, path: str, body: Any = None, *, auth: str | None = None
             ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Authorization": f"Bearer {auth or self.secret}"})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, json.loads(data) if data else None


def _secret(data: Path, app: str) -> str:
    return subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(data), "app",
                           "secret", app],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


@pytest.fixture
def api(data_dir: Path) -> Iterator[Api]:
    tokens, _ = provision(data_dir, ["alice", "bob", "carol"])
    others, _ = provision(data_dir, ["mallory", "alice"], app="other")
    tokens.update({f"other/{k}": v for k, v in others.items()})
    server = ServerProcess(data_dir)
    server.start()
    try:
        yield Api(server, _secret(data_dir, "default"), _secret(data_dir, "other"), tokens)
    finally:
        server.stop()
    assert "Traceback" not in server.output, server.output


# --- attacks ---------------------------------------------------------------------------


def test_nothing_crosses_apps(api: Api) -> None:
    # The other app's secret and users see app 1's bob as no one, and cannot touch him.
    assert api.call("GET", "/v1/users/bob/presence", auth=api.other_secret)[1]["state"] \
        == "unknown"
    assert api.call("GET", "/v1/users/bob/presence",
                    auth=api.tokens["other/mallory"])[1]["state"] == "unknown"
    assert api.call("PUT", "/v1/users/bob/privacy", {"presence": "nobody"},
                    auth=api.other_secret)[0] == 404
    assert api.call("PUT", "/v1/blocks/bob", auth=api.tokens["other/mallory"])[0] == 404
    assert api.call("PUT", "/v1/users/mallory/blocks/bob", auth=api.other_secret)[0] == 404
    status, doc = api.call("PUT", "/v1/users/mallory/contacts", {"contacts": ["bob", "alice"]},
                           auth=api.other_secret)
    assert (status, doc["contacts"], doc["unknown"]) == (200, ["alice"], ["bob"])
    assert api.call("GET", "/v1/users/alice/contacts")[1] == {"contacts": []}


def test_a_hidden_user_reads_as_an_unknown_address(api: Api) -> None:
    assert api.call("PUT", "/v1/privacy", {"presence": "nobody"},
                    auth=api.tokens["alice"]) == (200, {"presence": "nobody"})
    hidden = api.call("GET", "/v1/users/alice/presence", auth=api.tokens["bob"])
    unknown = api.call("GET", "/v1/users/nobody/presence", auth=api.tokens["bob"])
    assert hidden[0] == unknown[0] == 200
    assert {**hidden[1], "address": ""} == {**unknown[1], "address": ""}
    assert api.call("GET", "/v1/users/alice/presence")[1]["state"] == "offline"  # the app


MALFORMED: list[tuple[str, str, Any]] = [
    ("PUT", "/v1/privacy", {"presence": "friends"}),
    ("PUT", "/v1/privacy", {"presence": {"x": 1}}),
    ("PUT", "/v1/privacy", {}),
    ("PUT", "/v1/users/alice/privacy", {"presence": 2}),
    ("PUT", "/v1/users/alice/contacts", {"contacts": "bob"}),
    ("PUT", "/v1/users/alice/contacts", {"contacts": [1]}),
    ("PUT", "/v1/users/alice/contacts", {"contacts": ["x" * 65]}),
    ("PUT", "/v1/users/alice/contacts", {"contacts": ["b"] * 10_001}),
    ("PUT", "/v1/blocks/alice", None),
    ("PUT", "/v1/users/alice/blocks/alice", None),
    ("GET", "/v1/users/%ff/presence", None),
]


def test_malformed_requests_are_problems(api: Api) -> None:
    # One server for every case (a server each cost 1.5 s): a refused request changes nothing.
    for method, path, body in MALFORMED:
        auth = api.tokens["alice"] if path.startswith(("/v1/privacy", "/v1/blocks")) else None
        status, doc = api.call(method, path, body, auth=auth)
        assert status in (400, 422), (method, path, doc)
        assert doc["status"] == status
    assert api.call("GET", "/v1/privacy", auth=api.tokens["alice"])[1] == {"presence": "everyone"}


def test_tokens_are_checked(api: Api) -> None:
    assert api.call("GET", "/v1/users/alice/presence", auth="tdg_forged")[0] == 401
    assert api.call("GET", "/v1/blocks", auth=api.secret)[0] == 401  # a user's route
    assert api.call("GET", "/v1/users/alice/blocks", auth=api.tokens["bob"])[0] == 401


# --- the routes ------------------------------------------------------------------------------


def test_contacts_and_privacy_decide_who_sees(api: Api) -> None:
    status, doc = api.call("PUT", "/v1/users/alice/contacts", {"contacts": ["bob", "ghost"]})
    assert (status, doc) == (200, {"contacts": ["bob"], "unknown": ["ghost"]})
    assert api.call("PUT", "/v1/users/alice/privacy", {"presence": "contacts"})[0] == 200
    assert api.call("GET", "/v1/users/alice/privacy")[1] == {"presence": "contacts"}
    assert api.call("GET", "/v1/privacy", auth=api.tokens["alice"])[1] == {
        "presence": "contacts"}
    seen = {name: api.call("GET", "/v1/users/alice/presence", auth=api.tokens[name])[1]
            for name in ("alice", "bob", "carol")}
    assert {name: doc["state"] for name, doc in seen.items()} == {
        "alice": "offline", "bob": "offline", "carol": "unknown"}
    assert seen["bob"]["last_seen_ms"] is None  # never connected


def test_blocks_by_the_user_and_by_the_app(api: Api) -> None:
    assert api.call("PUT", "/v1/blocks/bob", auth=api.tokens["alice"]) == (204, None)
    assert api.call("PUT", "/v1/blocks/bob", auth=api.tokens["alice"]) == (204, None)
    assert api.call("PUT", "/v1/users/alice/blocks/carol") == (204, None)
    assert api.call("GET", "/v1/blocks", auth=api.tokens["alice"]) == (
        200, {"blocks": ["bob", "carol"]})
    assert api.call("GET", "/v1/users/alice/blocks")[1] == {"blocks": ["bob", "carol"]}
    assert api.call("GET", "/v1/users/alice/presence", auth=api.tokens["bob"])[1][
        "state"] == "unknown"
    assert api.call("GET", "/v1/users/bob/presence", auth=api.tokens["alice"])[1][
        "state"] == "offline"  # one way
    assert api.call("DELETE", "/v1/blocks/bob", auth=api.tokens["alice"]) == (204, None)
    assert api.call("DELETE", "/v1/users/alice/blocks/carol") == (204, None)
    assert api.call("DELETE", "/v1/users/alice/blocks/carol") == (204, None)
    assert api.call("GET", "/v1/blocks", auth=api.tokens["alice"])[1] == {"blocks": []}
    assert api.call("PUT", "/v1/blocks/ghost", auth=api.tokens["alice"])[0] == 404


def test_the_openapi_document_lists_both_credentials_for_presence(api: Api) -> None:
    _, doc = api.call("GET", "/v1/openapi.json")
    op = doc["paths"]["/v1/users/{address}/presence"]["get"]
    assert op["security"] == [{"appSecret": []}, {"accessToken": []}]
    assert doc["paths"]["/v1/blocks/{address}"]["put"]["security"] == [{"accessToken": []}]
