"""The /v1 REST API end to end: a real server, real HTTP clients (http.client, curl)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from appliance.protocol.wire import CloseCode, Flag, Message, Status
from tests.api.rest_support import Api
from tests.support.client import Client, ServerClosedError

pytestmark = pytest.mark.slow


def test_authentication_is_required_and_errors_are_problems(api: Api) -> None:
    status, headers, doc = api.call("GET", "/v1/users", secret="")
    assert (status, doc["title"]) == (401, "unauthorized")
    assert headers["content-type"] == "application/problem+json"
    assert headers["www-authenticate"].startswith("Bearer")
    assert api.call("GET", "/v1/users", secret="tds_wrong")[0] == 401
    assert api.call("GET", "/v1/health", secret="")[0] == 200
    status, _, doc = api.call("POST", "/v1/users", raw=b"{not json")
    assert (status, doc["title"]) == (400, "malformed JSON")
    status, _, doc = api.call("PUT", "/v1/users")
    assert status == 405
    assert "GET" in doc["detail"]
    status, _, doc = api.call("POST", "/v1/users", {"address": "x" * 65})
    assert (status, doc["status"]) == (422, 422)


def test_users_tokens_and_paging(api: Api) -> None:
    for name in ("carol", "alice", "bob"):
        assert api.call("POST", "/v1/users", {"address": name})[0] == 201
    status, _, doc = api.call("POST", "/v1/users", {"address": "alice"})
    assert (status, doc["title"]) == (409, "conflict")
    _, _, page = api.call("GET", "/v1/users?limit=2")
    assert [u["address"] for u in page["users"]] == ["alice", "bob"]
    _, _, rest = api.call("GET", f"/v1/users?limit=2&after={page['next']}")
    assert ([u["address"] for u in rest["users"]], rest["next"]) == (["carol"], None)
    status, _, issued = api.call("POST", "/v1/users/alice/tokens", {"ttl_s": 600})
    assert status == 201
    assert issued["token"].startswith("tdg_")

    async def hello(token: str) -> None:
        client = await Client.connect(api.server.host, api.server.port, token, "d")
        await client.close()

    asyncio.run(hello(issued["token"]))
    assert api.call("DELETE", "/v1/users/alice/tokens")[2] == {"revoked": 1}
    with pytest.raises(ServerClosedError) as refused:
        asyncio.run(hello(issued["token"]))
    assert refused.value.code == CloseCode.AUTH_FAILED
    assert api.call("DELETE", "/v1/users/carol")[0] == 204
    assert api.call("DELETE", "/v1/users/carol")[0] == 404


def test_groups_and_backend_messages_reach_devices(api: Api) -> None:
    for name in ("alice", "bob", "carol"):
        api.call("POST", "/v1/users", {"address": name})
    status, _, group = api.call("POST", "/v1/groups", {"name": "team",
                                                       "members": ["alice", "bob"]})
    assert status == 201
    assert {m["address"] for m in group["members"]} == {"alice", "bob"}
    assert group["flags"] == ["send_by_selected"]
    _, _, group = api.call("POST", f"/v1/groups/{group['id']}/members", {"add": ["carol"],
                                                                          "remove": ["bob"]})
    assert {m["address"] for m in group["members"]} == {"alice", "carol"}
    assert api.call("GET", "/v1/groups/999999")[0] == 404
    token = api.call("POST", "/v1/users/bob/tokens", {})[2]["token"]
    carol = api.call("POST", "/v1/users/carol/tokens", {})[2]["token"]

    async def go() -> None:
        bob = await Client.connect(api.server.host, api.server.port, token, "b")
        # The group's changes came first (PROTOCOL.md §8.3): created, and bob's removal.
        for event in ("created", "member_removed"):
            told = await bob.message()
            assert (told.peer, told.flags & Flag.SYSTEM) == (b"@app", Flag.SYSTEM)
            assert json.loads(told.payload)["event"] == event
        status, _, sent = await asyncio.to_thread(
            api.call, "POST", "/v1/messages", {"from": "alice", "to": "bob", "text": "hello",
                                               "id": 42, "type": 3})
        assert (status, sent["id"], sent["status"]) == (201, 42, "SENT")
        got = await bob.message()
        assert (got.peer, got.payload, got.id, got.type) == (b"alice", b"hello", 42, 3)
        # The same id again: answered with the stored status, not delivered twice.
        again = await asyncio.to_thread(api.call, "POST", "/v1/messages",
                                        {"from": "alice", "to": "bob", "text": "hello",
                                         "id": 42})
        assert again[2]["status"] in ("SENT", "DELIVERED")
        status, _, doc = await asyncio.to_thread(
            api.call, "POST", "/v1/messages", {"from": "alice", "to": "nobody", "text": "x"})
        assert (status, doc["message_status"]) == (422, "INVALID_DEST")
        c = await Client.connect(api.server.host, api.server.port, carol, "c")
        assert json.loads((await c.message()).payload)["event"] == "member_added"
        status, _, _ = await asyncio.to_thread(
            api.call, "POST", "/v1/messages", {"from": "alice", "group": group["id"],
                                               "payload_base64": "AAE="})
        assert status == 201
        got = await c.message()
        assert (got.group_id, got.payload) == (group["id"], b"\x00\x01")
        # As the app itself (no "from"): the reserved sender @app.
        status, _, sent = await asyncio.to_thread(
            api.call, "POST", "/v1/messages", {"to": "bob", "text": "from the app"})
        assert (status, sent["status"]) == (201, "SENT")
        got = await bob.message()
        assert (got.peer, got.payload) == (b"@app", b"from the app")
        reserved = await asyncio.to_thread(api.call, "POST", "/v1/users", {"address": "@x"})
        assert reserved[0] == 422
        bob.send(Message(7, b"carol", b"and a native one"))
        assert (await bob.status()).status == Status.SENT
        stats = (await asyncio.to_thread(api.call, "GET", "/v1/stats"))[2]
        assert stats == {"sessions": 2, "users_online": 2}  # this app's, nothing else's
        await bob.close()
        await c.close()

    asyncio.run(go())
    assert api.call("DELETE", f"/v1/groups/{group['id']}")[0] == 204


def test_the_openapi_document_is_valid_and_schemathesis_finds_no_5xx(api: Api) -> None:
    status, _, doc = api.call("GET", "/v1/openapi.json", secret="")
    assert status == 200
    validate(doc)
    paths = set(doc["paths"])
    assert {"/v1/users", "/v1/messages", "/v1/groups/{group_id}/members"} <= paths
    st = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [str(st), "run", f"http://{api.server.host}:{api.server.port}/v1/openapi.json",
         "-H", f"Authorization: Bearer {api.secret}", "--max-examples", "25",
         "--checks", "not_a_server_error", "--seed", "1"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"})
    assert result.returncode == 0, result.stdout[-3000:]


def test_apps_need_the_operator_key_and_users_can_be_renamed(api: Api) -> None:
    assert api.call("GET", "/v1/apps")[0] == 401  # an app secret is not enough
    key = subprocess.run([sys.executable, "-m", "appliance", "--data-dir",
                          str(api.server.data_dir), "operator", "key"], capture_output=True,
                         text=True, check=True, timeout=60).stdout.strip()
    assert key.startswith("tdo_")
    status, _, created = api.call("POST", "/v1/apps", {"name": "shop"}, secret=key)
    assert (status, created["name"]) == (201, "shop")
    assert api.call("POST", "/v1/apps", {"name": "shop"}, secret=key)[0] == 409
    assert api.call("POST", "/v1/apps", {"name": "no spaces"}, secret=key)[0] == 422
    _, _, apps = api.call("GET", "/v1/apps", secret=key)
    assert [a["name"] for a in apps["apps"]] == ["default", "shop"]
    # The new app's secret works, on its own users only.
    shop = created["secret"]
    assert api.call("POST", "/v1/users", {"address": "alice"}, secret=shop)[0] == 201
    assert api.call("GET", "/v1/users", secret=shop)[2]["users"][0]["address"] == "alice"
    assert api.call("GET", "/v1/users")[2]["users"] == []  # the default app has none
    status, _, rotated = api.call("POST", "/v1/apps/shop/secrets", {}, secret=key)
    assert status == 201
    assert api.call("GET", "/v1/users", secret=shop)[0] == 401  # revoked
    assert api.call("GET", "/v1/users", secret=rotated["secret"])[0] == 200
    status, _, renamed = api.call("PATCH", "/v1/users/alice", {"address": "alicia"},
                                  secret=rotated["secret"])
    assert (status, renamed["address"]) == (200, "alicia")
    assert api.call("PATCH", "/v1/users/nobody", {"address": "x"},
                    secret=rotated["secret"])[0] == 404
