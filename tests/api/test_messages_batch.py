"""``POST /v1/messages`` with an array (issue 16): one answer per message, through
`Engine.submit`; a real server, http.client and curl over HTTP/2."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess

import pytest

from appliance.api.messages import MAX_BATCH
from tests.api.rest_support import Api
from tests.support.client import Client
from tests.support.components import missing

pytestmark = pytest.mark.slow


def _setup(api: Api) -> str:
    for name in ("alice", "bob", "carol"):
        assert api.call("POST", "/v1/users", {"address": name})[0] == 201
    return str(api.call("POST", "/v1/users/bob/tokens", {})[2]["token"])


def test_a_batch_with_mixed_valid_and_invalid_messages_answers_each(api: Api) -> None:
    token = _setup(api)
    _, _, group = api.call("POST", "/v1/groups", {"name": "g", "members": ["alice", "bob"]})
    batch = [
        {"from": "alice", "to": "bob", "text": "one", "id": 1},
        {"from": "alice", "to": "nobody", "text": "lost", "id": 2},        # INVALID_DEST
        {"from": "alice", "to": "bob", "id": 3},                           # no text
        "not an object",
        {"from": "alice", "to": "bob", "text": "dup", "id": 1},            # id twice
        {"from": "mallory", "to": "bob", "text": "who?", "id": 5},         # unknown sender
        {"from": "carol", "group": group["id"], "text": "not mine", "id": 6},  # NOT_MEMBER
        {"from": "alice", "to": "bob", "payload_base64":
         base64.b64encode(b"x" * (64 * 1024 + 1)).decode(), "id": 7},     # TOO_LARGE
        {"from": "carol", "to": "bob", "text": "two", "id": 1},           # same id, other sender
        {"from": "alice", "group": group["id"], "text": "three", "id": 9},
        {"from": "alice", "to": "bob", "text": "four", "id": 2**64},       # id out of range
    ]

    async def go() -> None:
        bob = await Client.connect(api.server.host, api.server.port, token, "b")
        created = await bob.message()  # the group's announcement (PROTOCOL.md §8.3)
        assert json.loads(created.payload)["event"] == "created"
        status, _, doc = await asyncio.to_thread(api.call, "POST", "/v1/messages", batch)
        assert status == 200
        results = doc["results"]
        assert len(results) == len(batch)
        assert [r.get("status") for r in results] == [
            "SENT", None, None, None, None, None, None, None, "SENT", "SENT", None]
        errors = {i: r["error"] for i, r in enumerate(results) if "error" in r}
        assert errors[1]["message_status"] == "INVALID_DEST"
        assert errors[2]["status"] == 422
        assert errors[3]["detail"] == "each message must be an object"
        assert "twice" in errors[4]["detail"]
        assert errors[5]["field"] == "from"
        assert (errors[6]["status"], errors[6]["message_status"]) == (403, "NOT_MEMBER")
        assert (errors[7]["status"], errors[7]["message_status"]) == (413, "TOO_LARGE")
        assert errors[10]["field"] == "id"
        assert all(e["type"] == "about:blank" for e in errors.values())
        got = sorted([(m.peer, m.payload) for m in [await bob.message() for _ in range(3)]])
        assert got == [(b"alice", b"one"), (b"alice", b"three"), (b"carol", b"two")]
        # Exactly once: the same batch again is answered from the store, delivered to no one.
        status, _, again = await asyncio.to_thread(api.call, "POST", "/v1/messages", batch)
        assert again["results"][0].get("status") in ("SENT", "DELIVERED")
        assert [r.get("id") for r in again["results"] if "id" in r][:1] == [1]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(bob.message(), 0.5)
        await bob.close()

    asyncio.run(go())


def test_a_batch_is_bounded_and_an_empty_one_refused(api: Api) -> None:
    _setup(api)
    status, _, doc = api.call("POST", "/v1/messages", [])
    assert (status, doc["title"]) == (422, "invalid request")
    too_many = [{"from": "alice", "to": "bob", "text": ""}] * (MAX_BATCH + 1)
    status, _, doc = api.call("POST", "/v1/messages", too_many)
    assert status == 422
    assert str(MAX_BATCH) in doc["detail"]
    status, _, doc = api.call("POST", "/v1/messages", raw=b"[1, 2")
    assert status == 400
    status, _, doc = api.call("POST", "/v1/messages", raw=b"42")
    assert status == 400


def test_a_batch_of_a_thousand_over_http2_with_curl(api: Api) -> None:
    if shutil.which("curl") is None:
        missing("curl is needed for this test")
    _setup(api)
    batch = [{"from": "alice", "to": "bob", "text": f"m{i}", "id": i + 1}
             for i in range(MAX_BATCH)]
    out = subprocess.run(
        ["curl", "-s", "--http2-prior-knowledge", "-X", "POST",
         "-H", f"Authorization: Bearer {api.secret}", "-H", "Content-Type: application/json",
         "--data-binary", "@-", "-w", "\n%{http_version} %{http_code}",
         f"http://{api.server.host}:{api.server.port}/v1/messages"],
        input=json.dumps(batch), capture_output=True, text=True, timeout=60, check=True).stdout
    body, _, status_line = out.rpartition("\n")
    assert status_line == "2 200"
    results = json.loads(body)["results"]
    assert [r["id"] for r in results] == list(range(1, MAX_BATCH + 1))
    assert {r["status"] for r in results} == {"SENT"}
    assert len({r["timestamp_ms"] for r in results}) <= 3  # committed together, not one by one


def test_a_deleted_sender_is_refused_at_once(api: Api) -> None:
    """Attack: send as a user just deleted.  Before, the sender's id was cached for 2 s:
    the message was SENT from a user that no longer exists (and cut through to online
    recipients under its old name)."""
    _setup(api)
    one = {"from": "alice", "to": "bob", "text": "hi"}
    assert api.call("POST", "/v1/messages", one)[0] == 201  # alice's id is cached now
    assert api.call("DELETE", "/v1/users/alice")[0] == 204
    status, _, doc = api.call("POST", "/v1/messages", one)
    assert (status, doc["field"]) == (422, "from")
    status, _, doc = api.call("POST", "/v1/messages", [one])
    assert doc["results"][0]["error"]["field"] == "from"
