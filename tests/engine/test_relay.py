"""Real-time messages whose lookup fails: the sender is answered, never left waiting;
real-time group messages pay their fan-out before they are relayed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from appliance.config.limits import EngineLimits
from appliance.engine.core import Engine
from appliance.engine.submit import Sender
from appliance.errors import StorageUnavailableError
from appliance.protocol.wire import Hello, Message, Status
from appliance.storage.models import GroupRoster
from tests.engine.groups.harness import World, run as run_world
from tests.engine.test_delivery import FakeLink, FlakyStore, Scheduler, run
from tests.engine.test_delivery_groups import group_of
from tests.storage.conftest import (
    Opener,
    backend as backend,  # the fixture: SQLite and MariaDB
)

#: A group's members besides its sender, and the sender's fan-out burst.
MEMBERS = 50
BURST = 500


def _fail_lookups(store: FlakyStore) -> None:
    """The store's reads fail as a MariaDB that went away does (on this store only)."""
    async def find_user(app_id: int, address: bytes) -> int | None:
        raise StorageUnavailableError("MariaDB: Can't connect to server")

    async def group_roster(app_id: int, group_id: int) -> GroupRoster | None:
        raise StorageUnavailableError("MariaDB: Can't connect to server")

    store.find_user = find_user  # type: ignore[method-assign]
    store.group_roster = group_roster  # type: ignore[method-assign]


def test_a_failed_lookup_answers_failed_and_resumes_the_sender(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        link = FakeLink()
        alice = await engine.open_session(link, Hello(tokens["alice"], b"a"))
        await sched.settle()
        _fail_lookups(store)
        most = engine.limits.max_pending_relays
        # bob is offline: whether he exists needs the store; group 7 needs its roster.
        for i in range(1, most + 1):
            engine.on_message(alice, Message(i, b"bob", b"now", expiry_s=0))
        engine.on_message(alice, Message(most + 1, b"", b"now", group_id=7, expiry_s=0))
        assert link.paused  # max_pending_relays lookups wait: not read from
        await sched.settle()
        assert sorted(link.statuses()) == [(i, Status.FAILED) for i in range(1, most + 2)]
        assert not link.paused  # the sender is read from again
        assert alice.relays == 0

    run(tmp_path, body)


def test_a_submitted_real_time_message_is_answered_when_its_lookup_fails(
        tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        alice = await store.find_user(1, b"alice")
        assert alice is not None
        _fail_lookups(store)
        answers = await engine.submit(Sender(1, alice, b"alice"), [
            Message(1, b"bob", b"now", expiry_s=0),
            Message(2, b"", b"now", group_id=3, expiry_s=0)])
        assert [a.status for a in answers] == [Status.FAILED, Status.FAILED]

    run(tmp_path, body)


def test_real_time_group_messages_pay_before_they_are_relayed(backend: Opener) -> None:
    """A real-time group message is let in at 1 token and relayed after its roster is
    read: the rest used to be charged after the relay, so every lookup already waiting
    (`max_pending_relays`, per device) was relayed to every member online unpaid (found
    by the session 17 review: 60 of 60 to 50 members with a burst worth 9)."""
    async def body(w: World) -> None:
        names = [f"m{i}" for i in range(MEMBERS)]
        gid = await group_of(w, "alice", *names)
        alice, link = await w.connect("alice")
        links = [(await w.connect(name))[1] for name in names]
        for i in range(1, 61):  # at once: every roster lookup waits
            w.engine.on_message(alice, Message(i, b"", b"x", group_id=gid, expiry_s=0))
        await w.settle()
        relayed = len(links[0].messages())
        frames = sum(len(member.messages()) for member in links)
        statuses = Counter(status for _, status in link.statuses())
        assert frames <= BURST, (relayed, frames, statuses)
        assert statuses == {Status.SENT: relayed, Status.RATE_LIMITED: 60 - relayed}
        assert w.engine.refusals["fanout_limited"] == 60 - relayed
        assert alice.relays == 0
    run_world(backend, body, EngineLimits(commit_window_ms=0.0, fanout_burst=BURST,
                                          fanout_rate_per_s=0.001))
