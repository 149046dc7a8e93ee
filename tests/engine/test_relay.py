"""Real-time messages whose lookup fails: the sender is answered, never left waiting."""

from __future__ import annotations

from pathlib import Path

from appliance.engine.core import Engine
from appliance.engine.submit import Sender
from appliance.errors import StorageUnavailableError
from appliance.protocol.wire import Hello, Message, Status
from appliance.storage.models import GroupRoster
from tests.engine.test_delivery import FakeLink, FlakyStore, Scheduler, run


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
