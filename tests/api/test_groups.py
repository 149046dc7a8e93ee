"""Groups end to end (issue 16): a real server, real HTTP (http.client), real TCP clients.

The app's REST changes announced to members, the receipts route next to what
the sender's devices are told (the aggregate only to a client that asked for
extensions), and a member's GROUP_MANAGE over a real connection.
"""

from __future__ import annotations

import asyncio
import json

from appliance.protocol.wire import (
    Ack,
    Feature,
    Flag,
    HelloFlag,
    Message,
    Status,
    StatusReport,
    WelcomeField as W,
)
from appliance.protocol.wire.groups import GroupManage, GroupOp, GroupResult, GroupResultCode
from tests.api.rest_support import Api
from tests.support.client import Client

EXT = HelloFlag.EXTENSIONS


def token(api: Api, name: str) -> str:
    status, _, doc = api.call("POST", f"/v1/users/{name}/tokens", {})
    assert status == 201
    return str(doc["token"])


async def connect(api: Api, name: str, device: str, flags: int = EXT) -> Client:
    return await Client.connect(api.server.host, api.server.port,
                                await asyncio.to_thread(token, api, name), device,
                                client_flags=flags)


async def reports(client: Client, count: int) -> list[tuple[int, int, bytes]]:
    got = []
    while len(got) < count:
        event = await client.next_event()
        if isinstance(event, StatusReport) and event.report_seq:
            got.append((event.id, event.status, event.peer))
            client.report_ack(event.report_seq)
    return got


def test_rest_changes_are_announced_and_flags_and_names_are_checked(api: Api) -> None:
    for name in ("alice", "bob"):
        api.call("POST", "/v1/users", {"address": name})
    status, _, group = api.call("POST", "/v1/groups", {
        "name": "live", "members": ["alice", "bob"], "perms": ["receive"],
        "flags": ["no_store"]})
    assert status == 201
    assert group["flags"] == ["no_store"]
    assert {m["perms"] for m in group["members"]} == {"receive"}
    gid = group["id"]
    for bad in ({"flags": ["everything"]}, {"flags": "x"}, {"name": ""}, {"name": "a\u202eb"},
                {}, {"name": "x" * 256}):
        status, _, doc = api.call("PATCH", f"/v1/groups/{gid}", bad)
        assert status == 422, (bad, doc)
    status, _, doc = api.call("PATCH", f"/v1/groups/{gid}", {"name": "renamed", "flags": []})
    assert (status, doc["name"], doc["flags"]) == (200, "renamed", [])
    assert api.call("PATCH", "/v1/groups/999999", {"name": "x"})[0] == 404
    status, _, doc = api.call("POST", f"/v1/groups/{gid}/members", {"add": ["nobody"]})
    assert status == 404
    status, _, doc = api.call("POST", f"/v1/groups/{gid}/members", {"add": ["@app"]})
    assert status == 422
    status, _, doc = api.call("POST", f"/v1/groups/{gid}/members", {"add": ["x"] * 1001})
    assert status == 422

    async def go() -> None:
        bob = await connect(api, "bob", "b")
        told = [json.loads((await bob.message()).payload) for _ in range(3)]
        assert [(t["event"], t["by"]) for t in told] == [
            ("created", "@app"), ("renamed", "@app"), ("flags_changed", "@app")]
        assert told[0]["flags"] == ["no_store"]
        assert told[1]["name"] == "renamed"
        await bob.close()

    asyncio.run(go())
    assert api.call("DELETE", f"/v1/groups/{gid}")[0] == 204
    assert api.call("DELETE", f"/v1/groups/{gid}")[0] == 404


def test_receipts_route_and_aggregate_reports_to_new_clients_only(api: Api) -> None:
    for name in ("alice", "bob", "carol"):
        api.call("POST", "/v1/users", {"address": name})
    gid = api.call("POST", "/v1/groups", {"name": "team",
                                         "members": ["alice", "bob", "carol"]})[2]["id"]

    async def go() -> None:
        alice = await connect(api, "alice", "new")
        assert alice.welcome is not None
        assert alice.welcome.info is not None
        features = Feature(alice.welcome.info[W.FEATURES])
        assert Feature.GROUP_MANAGE in features
        assert Feature.GROUP_RECEIPTS in features
        # A device registered after a message gets only what is accepted after it (§3.1).
        old = await connect(api, "alice", "old", flags=0)
        assert old.welcome is not None
        assert old.welcome.info is None
        bob = await connect(api, "bob", "b")
        for client in (alice, bob):  # the group's creation, to each member
            assert json.loads((await client.message()).payload)["event"] == "created"
        alice.send(Message(77, b"", b"hello team", group_id=gid))
        assert (await alice.status()).status == Status.SENT
        assert (await bob.message()).payload == b"hello team"  # and acknowledged
        assert await reports(alice, 1) == [(77, Status.DELIVERED, b"bob")]
        status, _, doc = await asyncio.to_thread(
            api.call, "GET", "/v1/messages/77/receipts?from=alice")
        assert status == 200
        assert (doc["group"], doc["recipients"], doc["delivered"], doc["delivered_all"]) == (
            gid, 2, 1, False)
        assert [(m["address"], m["status"]) for m in doc["members"]] == [
            ("bob", "DELIVERED"), ("carol", "SENT")]
        carol = await connect(api, "carol", "c")  # offline until now: gets it from the store
        assert json.loads((await carol.message()).payload)["event"] == "created"
        assert (await carol.message()).payload == b"hello team"
        assert await reports(alice, 2) == [(77, Status.DELIVERED, b"carol"),
                                           (77, Status.DELIVERED_ALL, b"")]
        bob.read(b"alice", (77,), gid)
        carol.read(b"alice", (77,), gid)
        assert await reports(alice, 3) == [(77, Status.READ, b"bob"), (77, Status.READ, b"carol"),
                                           (77, Status.READ_ALL, b"")]
        # The old client got the members' reports, never an aggregate.
        assert await reports(old, 4) == [
            (77, Status.DELIVERED, b"bob"), (77, Status.DELIVERED, b"carol"),
            (77, Status.READ, b"bob"), (77, Status.READ, b"carol")]
        status, _, doc = await asyncio.to_thread(
            api.call, "GET", "/v1/messages/77/receipts?from=alice&limit=1")
        assert (doc["delivered_all"], doc["read_all"], doc["next"]) == (True, True, "bob")
        assert [m["status"] for m in doc["members"]] == ["READ"]
        for client in (alice, old, bob, carol):
            await client.close()

    asyncio.run(go())
    assert api.call("GET", "/v1/messages/77/receipts")[0] == 404  # the app sent no 77
    assert api.call("GET", "/v1/messages/77/receipts?from=nobody")[0] == 404
    assert api.call("GET", "/v1/messages/x/receipts?from=alice")[0] == 404
    assert api.call("GET", "/v1/messages/77/receipts?from=alice&limit=0")[0] == 422


async def result_of(client: Client) -> tuple[GroupResult, list[dict[str, object]]]:
    """The next GROUP_RESULT, and the announcements that came before it (acknowledged)."""
    told = []
    while True:
        event = await client.next_event()
        if isinstance(event, GroupResult):
            return event, told
        if isinstance(event, Message):
            assert event.flags & Flag.SYSTEM
            told.append(json.loads(event.payload))
            client.send(Ack((event.seq,)))


def test_a_member_manages_the_group_over_the_wire(api: Api) -> None:
    for name in ("alice", "bob", "dave"):
        api.call("POST", "/v1/users", {"address": name})

    async def go() -> None:
        alice = await connect(api, "alice", "a")
        bob = await connect(api, "bob", "b")
        alice.send(GroupManage(1, GroupOp.CREATE, 0, b"club", members=((b"bob", 3),)))
        result, told = await result_of(alice)
        assert (result.request_id, result.result, result.members) == (1, GroupResultCode.OK, 2)
        assert [t["event"] for t in told] == ["created"]  # told before the answer
        gid = result.group_id
        bob.send(GroupManage(2, GroupOp.ADD, gid, members=((b"dave", 3),)))
        refused, told = await result_of(bob)
        assert (refused.request_id, refused.result) == (2, GroupResultCode.FORBIDDEN)
        assert [t["event"] for t in told] == ["created"]
        alice.send(GroupManage(3, GroupOp.ADD, gid, members=((b"dave", 3),)))
        added, told = await result_of(alice)
        assert (added.result, added.members) == (GroupResultCode.OK, 3)
        assert told == [{"event": "member_added", "group": gid, "by": "alice",
                         "members": [{"address": "dave", "perms": ["send", "receive"]}]}]
        for client in (alice, bob):
            await client.close()

    asyncio.run(go())
    doc = api.call("GET", "/v1/groups")[2]["groups"][0]
    assert [m["address"] for m in doc["members"]] == ["alice", "bob", "dave"]
