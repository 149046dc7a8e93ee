"""The payload of a group's announcements (PROTOCOL.md §8.3): small, parseable, split."""

from __future__ import annotations

import json

from appliance.engine.groups.announce import MAX_ANNOUNCEMENT_BYTES, Announcement
from appliance.protocol.wire.groups import GroupFlag, Perm


def test_every_field_and_its_names() -> None:
    a = Announcement("created", 12, b"alice", ((b"bob", Perm.ALL), (b"carol", 0)),
                     name="Équipe", flags=GroupFlag.NO_STORE | GroupFlag.SEND_BY_SELECTED)
    [payload] = a.payloads(MAX_ANNOUNCEMENT_BYTES)
    assert json.loads(payload) == {
        "event": "created", "group": 12, "by": "alice", "name": "Équipe",
        "flags": ["send_by_selected", "no_store"],
        "members": [{"address": "bob", "perms": ["send", "receive", "admin"]},
                    {"address": "carol", "perms": []}]}
    assert "Équipe".encode() in payload  # UTF-8, not \\u escapes
    removed = Announcement("member_removed", 1, b"@app", ((b"bob", None),))
    assert json.loads(removed.payloads(100)[0])["members"] == [{"address": "bob"}]
    assert json.loads(Announcement("deleted", 1, b"a").payloads(10)[0]) == {
        "event": "deleted", "group": 1, "by": "a"}


def test_many_members_are_split_within_the_limit_and_none_is_lost() -> None:
    members = tuple((f"member-{i:04d}-\"quoted\"".encode(), Perm.DEFAULT) for i in range(1000))
    a = Announcement("member_added", 7, b"alice", members)
    for limit in (300, 4096, MAX_ANNOUNCEMENT_BYTES):
        payloads = a.payloads(limit)
        assert all(len(p) <= limit for p in payloads)
        docs = [json.loads(p) for p in payloads]
        assert all(d["event"] == "member_added" and d["group"] == 7 for d in docs)
        assert [m["address"] for d in docs for m in d["members"]] == [
            m.decode() for m, _ in members]
    assert len(a.payloads(MAX_ANNOUNCEMENT_BYTES)) < len(a.payloads(4096))


def test_an_entry_larger_than_the_limit_still_goes_alone() -> None:
    a = Announcement("member_added", 7, b"alice", ((b"x" * 64, 3), (b"y", 3)))
    payloads = a.payloads(50)
    assert [len(json.loads(p)["members"]) for p in payloads] == [1, 1]
