"""Group messages through the engine (issue 16): aggregate reports, NO_STORE, old clients.

DELIVERED_ALL and READ_ALL reach only the sender's devices that asked for
extensions, pushed after the commit and from the store on reconnect; an old
client never gets one, and its cumulative REPORT_ACK passes them by.  Members
offline and members who join later; on SQLite and a real MariaDB.
"""

from __future__ import annotations

from appliance.protocol.wire import Ack, Message, ReadReport, ReportAck, Status, StatusReport
from appliance.protocol.wire.groups import GroupFlag, Perm
from tests.engine.groups.harness import World, reports, run
from tests.engine.test_delivery import FakeLink
from tests.storage.conftest import (
    Opener,
    backend as backend,  # the fixture: SQLite and MariaDB
)

DELIVERED, READ = Status.DELIVERED, Status.READ
DELIVERED_ALL, READ_ALL = Status.DELIVERED_ALL, Status.READ_ALL


async def group_of(w: World, *names: str) -> int:
    for name in names:
        if name not in w.users:
            await w.user(name)
    info = await w.store.create_group(1, "g", w.clock.wall_ms(), GroupFlag.DEFAULT,
                                      [(w.users[n], Perm.DEFAULT) for n in names])
    return info.group_id


def confirm(w: World, session: object, link: FakeLink) -> None:
    """The device confirms every stored report it got (REPORT_ACK, cumulative)."""
    top = max((e.report_seq for e in link.events if isinstance(e, StatusReport)), default=0)
    if top:
        w.engine.on_report_ack(session, ReportAck(top))  # type: ignore[arg-type]


def acknowledge(w: World, session: object, link: FakeLink) -> None:
    w.engine.on_ack(session, Ack(tuple(m.seq for m in link.messages())))  # type: ignore[arg-type]


def test_aggregate_reports_with_members_offline_and_a_late_joiner(backend: Opener) -> None:
    async def body(w: World) -> None:
        gid = await group_of(w, "alice", "bob", "carol")
        alice, alice_link = await w.connect("alice", b"phone")
        old, old_link = await w.connect("alice", b"old-app", extensions=False)
        bob, bob_link = await w.connect("bob")  # carol is offline
        w.engine.on_message(alice, Message(1, b"", b"hello all", group_id=gid))
        await w.settle()
        # dave joins after the message: he does not block DELIVERED_ALL.
        await w.user("dave")
        await w.store.change_members(1, gid, [(w.users["dave"], Perm.DEFAULT)])
        dave, dave_link = await w.connect("dave")
        assert dave_link.messages() == []
        acknowledge(w, bob, bob_link)
        await w.settle()
        assert reports(alice_link) == [(1, DELIVERED, b"bob")]
        carol, carol_link = await w.connect("carol")  # from the store, on reconnect
        acknowledge(w, carol, carol_link)
        await w.settle()
        assert reports(alice_link) == [(1, DELIVERED, b"bob"), (1, DELIVERED, b"carol"),
                                       (1, DELIVERED_ALL, b"")]
        assert all(e.group_id == gid for e in alice_link.events
                   if isinstance(e, StatusReport) and e.report_seq)
        # The old client gets the members' reports, never the aggregate.
        assert reports(old_link) == [(1, DELIVERED, b"bob"), (1, DELIVERED, b"carol")]
        w.engine.on_read(dave, ReadReport(b"alice", gid, (1,)))  # never got it: ignored
        w.engine.on_read(bob, ReadReport(b"alice", gid, (1,)))
        w.engine.on_read(carol, ReadReport(b"alice", gid, (1,)))
        await w.settle()
        assert reports(alice_link)[3:] == [(1, READ, b"bob"), (1, READ, b"carol"),
                                           (1, READ_ALL, b"")]
        assert reports(old_link)[2:] == [(1, READ, b"bob"), (1, READ, b"carol")]
        # Both confirm what they got; on reconnect neither gets anything again, and the
        # old one still never an aggregate (its REPORT_ACK passed them by).
        confirm(w, alice, alice_link)
        confirm(w, old, old_link)
        await w.settle()
        for device, extensions in ((b"phone", True), (b"old-app", False)):
            w.engine.close_session(alice if extensions else old)
            _, again = await w.connect("alice", device, extensions=extensions)
            assert reports(again) == []
    run(backend, body)


def test_the_aggregate_waits_in_the_store_for_a_sender_offline(backend: Opener) -> None:
    async def body(w: World) -> None:
        gid = await group_of(w, "alice", "bob")
        old, _ = await w.connect("alice", b"old", extensions=False)
        w.engine.close_session(old)  # registered: a device starts after the reports that exist
        alice, _alice_link = await w.connect("alice")
        bob, bob_link = await w.connect("bob")
        w.engine.on_message(alice, Message(9, b"", b"x", group_id=gid))
        await w.settle()
        w.engine.close_session(alice)
        acknowledge(w, bob, bob_link)
        w.engine.on_read(bob, ReadReport(b"alice", gid, (9,)))
        await w.settle()
        _, new = await w.connect("alice")
        assert reports(new) == [(9, DELIVERED, b"bob"), (9, DELIVERED_ALL, b""),
                                (9, READ, b"bob"), (9, READ_ALL, b"")]
        _, old_link = await w.connect("alice", b"old", extensions=False)
        assert reports(old_link) == [(9, DELIVERED, b"bob"), (9, READ, b"bob")]
    run(backend, body)


def test_no_store_groups_answer_as_real_time_messages(backend: Opener) -> None:
    async def body(w: World) -> None:
        gid = await group_of(w, "alice", "bob")
        await w.store.update_group(1, gid, flags=GroupFlag.NO_STORE)
        alice, alice_link = await w.connect("alice")
        other, other_link = await w.connect("alice", b"tablet")
        w.engine.on_message(alice, Message(1, b"", b"to nobody", group_id=gid))
        await w.settle()
        # alice's own other device is online: it got it, so SENT.
        assert alice_link.statuses() == [(1, Status.SENT)]
        assert [m.payload for m in other_link.messages()] == [b"to nobody"]
        w.engine.close_session(other)
        w.engine.on_message(alice, Message(2, b"", b"again", group_id=gid))
        await w.settle()
        assert alice_link.statuses()[-1] == (2, Status.USER_OFFLINE)
        _, bob_link = await w.connect("bob")
        assert bob_link.messages() == []
        assert w.engine.uncommitted == 0
    run(backend, body)
