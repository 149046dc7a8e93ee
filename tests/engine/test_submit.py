"""`Engine.submit`: senders that are not connections get typed answers (issue 16)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from appliance.engine.core import Engine
from appliance.engine.submit import Sender, Submitted
from appliance.errors import BusyError, TooManyRequestsError
from appliance.protocol.wire import (
    U32_MAX,
    Feature,
    Hello,
    HelloFlag,
    Message,
    Status,
    WelcomeField,
)
from appliance.storage.models import WriteBatch, WriteResult
from tests.engine.test_delivery import FakeLink, FlakyStore, Scheduler, run


async def _sender(engine: Engine, name: bytes) -> Sender:
    user = await engine.store.find_user(1, name)
    assert user is not None
    return Sender(1, user, name)


def test_submit_answers_every_message_in_order_and_delivers_like_a_device(
        tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        bob_link = FakeLink()
        await engine.open_session(bob_link, Hello(tokens["bob"], b"b"))
        alice = await _sender(engine, b"alice")
        answers = await engine.submit(alice, [
            Message(1, b"bob", b"stored"),
            Message(2, b"nobody", b"lost"),
            Message(3, b"bob", b"x" * (engine.limits.max_payload_bytes + 1)),
            Message(4, b"bob", b"live", expiry_s=0),
        ])
        assert [(a.msg_id, a.status) for a in answers] == [
            (1, Status.SENT), (2, Status.INVALID_DEST), (3, Status.TOO_LARGE), (4, Status.SENT)]
        assert all(isinstance(a, Submitted) for a in answers)
        assert [a.ok for a in answers] == [True, False, False, True]
        assert answers[0].timestamp_ms > 0
        await sched.settle()
        assert sorted(m.payload for m in bob_link.messages()) == [b"live", b"stored"]
        # Again with the same ids: the stored one is a duplicate, answered, never re-delivered.
        again = await engine.submit(alice, [Message(1, b"bob", b"stored")])
        assert again[0].status == Status.SENT
        await sched.settle()
        assert len(bob_link.messages()) == 2

    run(tmp_path, body)


def test_submit_refuses_ids_it_could_not_answer_by(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        alice = await _sender(engine, b"alice")
        with pytest.raises(ValueError, match="id of its own"):
            engine.submit(alice, [Message(0, b"bob", b"x")])
        with pytest.raises(ValueError, match="id of its own"):
            engine.submit(alice, [Message(5, b"bob", b"x"), Message(5, b"bob", b"y")])
        assert await engine.submit(alice, []) == []
        assert engine.commit.uncommitted == 0  # nothing of a refused call was batched

    run(tmp_path, body)


def test_submit_answers_failed_when_the_store_fails(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        alice = await _sender(engine, b"alice")
        store.failing = True
        answers = await engine.submit(alice, [Message(1, b"bob", b"a"), Message(2, b"bob", b"b")])
        assert [a.status for a in answers] == [Status.FAILED, Status.FAILED]
        store.failing = False
        answers = await engine.submit(alice, [Message(1, b"bob", b"a")])
        assert answers[0].status == Status.SENT

    run(tmp_path, body)


def test_a_rate_limited_sender_is_held_to_the_user_rate(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        alice = await _sender(engine, b"alice")
        limited = Sender(alice.app_id, alice.user_id, alice.address, rate_limited=True)
        burst = engine.limits.send_burst
        answers = await engine.submit(limited, [Message(i, b"bob", b"m")
                                                for i in range(1, burst + 3)])
        assert {a.status for a in answers[:burst]} == {Status.SENT}
        assert {a.status for a in answers[burst:]} == {Status.RATE_LIMITED}
        backend = await engine.submit(alice, [Message(10**6, b"bob", b"m")])
        assert backend[0].status == Status.SENT  # the app's backend is not

    run(tmp_path, body)


def test_welcome_carries_the_limits_only_to_a_client_that_asks(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        old, new = FakeLink(), FakeLink()
        await engine.open_session(old, Hello(tokens["alice"], b"a"))
        await engine.open_session(new, Hello(tokens["bob"], b"b",
                                             client_flags=HelloFlag.EXTENSIONS | 0x80))
        assert old.events[0].info is None
        info = new.events[0].info
        limits = engine.limits
        assert info[WelcomeField.MAX_PAYLOAD_BYTES] == limits.max_payload_bytes
        assert info[WelcomeField.MAX_EXPIRY_S] == limits.max_expiry_s
        assert info[WelcomeField.WINDOW] == limits.window
        assert info[WelcomeField.MAX_DEVICES] == limits.max_devices
        assert Feature(info[WelcomeField.FEATURES]) == engine.features

    run(tmp_path, body)


def _limited(engine: Engine, **limits: int) -> None:
    engine.limits = dataclasses.replace(engine.limits, **limits)


def _holding_writes(body: Callable[..., Coroutine[Any, Any, None]]
                    ) -> Callable[..., Coroutine[Any, Any, None]]:
    """`body` with the store's writes held until it sets `store.hold_writes` (or fails:
    then they are released, so that the run can settle and report the failure)."""
    async def held(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        store.hold_writes = asyncio.Event()
        try:
            await body(engine, store, sched, tokens)
        finally:
            store.hold_writes.set()
    return held


def test_unanswered_submissions_are_bounded_per_app_and_server_wide(tmp_path: Path) -> None:
    """Attack: a backend submits faster than the store commits.  Before, nothing
    bounded what the engine held for it (400 arrays of 1,000 held 800 MiB)."""
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        _limited(engine, max_submitted=1500, max_app_submitted=1000)
        alice = await _sender(engine, b"alice")
        other_app = Sender(2, alice.user_id + 100, b"x")  # its messages are INVALID_DEST
        assert store.hold_writes is not None  # the commit takes its time
        first = engine.submit(alice, [Message(i, b"bob", b"m") for i in range(1, 1001)])
        with pytest.raises(TooManyRequestsError) as refused:
            engine.submit(alice, [Message(5000, b"bob", b"one more")])
        assert refused.value.retry_after_s > 0
        held = engine.commit.uncommitted
        with pytest.raises(TooManyRequestsError):  # all or nothing across senders
            engine.submit_many([(other_app, [Message(900, b"bob", b"m")]),
                                (alice, [Message(901, b"bob", b"m")])])
        assert engine.commit.uncommitted == held  # nothing of it was batched
        # Another app still has room of its own, up to the server's bound.
        second = engine.submit(other_app, [Message(i, b"bob", b"m") for i in range(1, 501)])
        with pytest.raises(BusyError) as busy:
            engine.submit(Sender(3, alice.user_id + 200, b"y"), [Message(1, b"bob", b"m")])
        assert busy.value.retry_after_s > 0
        assert engine.commit.uncommitted == held + 500
        # The operator sees them (/v1/operator/stats, tidings_refusals).
        assert (engine.refusals["submitted_app"], engine.refusals["submitted_busy"]) == (2, 1)
        store.hold_writes.set()
        assert {a.status for a in await first} == {Status.SENT}
        assert {a.status for a in await second} == {Status.INVALID_DEST}
        assert engine.submissions.total == 0  # room comes back with the answers
        assert engine.submit(alice, [Message(5000, b"bob", b"m")]) is not None

    run(tmp_path, _holding_writes(body))


def test_room_comes_back_only_with_the_answers(tmp_path: Path) -> None:
    """A caller that stops waiting (the REST deadline) does not free its messages'
    room: they are still in the engine until they are answered."""
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        _limited(engine, max_submitted=1000, max_app_submitted=1000)
        alice = await _sender(engine, b"alice")
        assert store.hold_writes is not None
        future = engine.submit(alice, [Message(i, b"bob", b"m") for i in range(1, 1001)])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(future), 0.01)  # type: ignore[arg-type]
        with pytest.raises(BusyError):
            engine.submit(alice, [Message(2000, b"bob", b"m")])
        store.hold_writes.set()
        await future
        assert engine.submissions.total == 0
        # A submission larger than a bound is taken when nothing else is held.
        assert len(await engine.submit(alice, [Message(i, b"bob", b"m")
                                               for i in range(3000, 4500)])) == 1500

    run(tmp_path, _holding_writes(body))


def test_several_senders_share_one_group_commit(tmp_path: Path) -> None:
    """Before, a REST array from N senders cost N commits one after the other."""
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        alice, bob = await _sender(engine, b"alice"), await _sender(engine, b"bob")
        commits = engine.commits
        futures = engine.submit_many([(alice, [Message(1, b"bob", b"a")]),
                                      (bob, [Message(1, b"alice", b"b")])])
        answers = [await f for f in futures]
        assert [[a.status for a in group] for group in answers] == [[Status.SENT]] * 2
        assert engine.commits == commits + 1

    run(tmp_path, body)


def test_the_largest_limits_a_config_takes_still_go_in_a_welcome(tmp_path: Path) -> None:
    """Every limit WELCOME announces is a u32: the configuration refuses more
    (tests/config), and at its largest the fields still encode."""
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        _limited(engine, max_payload_bytes=U32_MAX, max_expiry_s=U32_MAX, window=U32_MAX,
                 max_devices=U32_MAX, keepalive_s=U32_MAX, max_frame_bytes=U32_MAX)
        link = FakeLink()
        await engine.open_session(link, Hello(tokens["bob"], b"b",
                                              client_flags=HelloFlag.EXTENSIONS))
        assert link.events[0].info[WelcomeField.MAX_EXPIRY_S] == U32_MAX

    run(tmp_path, body)


@pytest.mark.parametrize("bad", [
    {"group_id": 2**64, "peer": b""}, {"type": 2**40}, {"priority": 99}, {"refid": 2**64},
    {"expiry_s": 2**32}, {"expiry_s": -1}, {"peer": b"x" * 256}, {"id": 2**64}])
def test_a_submitted_message_out_of_range_is_refused_before_it_is_batched(
        tmp_path: Path, bad: dict[str, Any]) -> None:
    """`submit` is where messages from senders that are not connections enter: the codec
    never checked them.  Before, a group id of 2**64 reached the writer, whose
    OverflowError killed the whole group commit (every sender in it unanswered)."""
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        alice = await _sender(engine, b"alice")
        fields: dict[str, Any] = {"id": 1, "peer": b"bob", "payload": b"x", **bad}
        with pytest.raises(ValueError, match=r"out of range|does not fit|id of its own"):
            engine.submit(alice, [Message(2, b"bob", b"fine"), Message(**fields)])
        assert engine.commit.uncommitted == 0
        assert engine.submissions.total == 0
        answers = await engine.submit(alice, [Message(3, b"bob", b"fine")])
        assert answers[0].status == Status.SENT

    run(tmp_path, body)


def test_an_unexpected_error_in_a_commit_fails_its_batch_and_the_next_commits(
        tmp_path: Path) -> None:
    """A bug below the engine (anything but a StorageError) cost every sender of the
    batch its answer for good: devices stayed paused at max_unconfirmed, and the
    submitted messages' room never came back."""
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        alice = await _sender(engine, b"alice")
        link = FakeLink()
        bob = await engine.open_session(link, Hello(tokens["bob"], b"b"))
        store.broken = OverflowError("Python int too large to convert to SQLite INTEGER")
        for i in range(1, 5):  # max_unconfirmed is 4: bob is paused
            engine.on_message(bob, Message(i, b"alice", b"m"))
        assert link.paused
        answers = await asyncio.wait_for(
            engine.submit(alice, [Message(1, b"bob", b"m")]), 5)  # type: ignore[arg-type]
        await sched.settle()
        assert answers[0].status == Status.FAILED
        assert link.statuses() == [(i, Status.FAILED) for i in range(1, 5)]
        assert not link.paused
        assert engine.commit.uncommitted == 0
        assert engine.submissions.total == 0
        store.broken = None
        answers = await engine.submit(alice, [Message(2, b"bob", b"m")])
        assert answers[0].status == Status.SENT

    run(tmp_path, body)


def test_a_commit_takes_a_bounded_share_of_submitted_messages(tmp_path: Path) -> None:
    """A backend at full rate made every commit as large as what it had in flight, and
    the devices' messages in it waited as long (honest p99 108-124 ms beside a backend
    sending 47,000 msg/s; 41-46 ms with 500 a commit).  Devices' messages all go in the
    next commit; the backend's past ``commit_max_submitted`` wait for the one after."""
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        _limited(engine, commit_max_submitted=10)
        sizes: list[int] = []
        write = store.write

        async def recording(batch: WriteBatch, now_ms: int) -> WriteResult:
            sizes.append(len(batch.messages))
            return await write(batch, now_ms)

        store.write = recording  # type: ignore[method-assign]
        alice = await _sender(engine, b"alice")
        link = FakeLink()
        bob = await engine.open_session(link, Hello(tokens["bob"], b"b"))
        await sched.settle()
        sizes.clear()
        assert store.hold_writes is not None
        first = engine.submit(alice, [Message(1, b"bob", b"first")])
        for _ in range(100):  # a few loop turns: the commit task starts
            await asyncio.sleep(0)
            if sizes:
                break
        assert sizes == [1]  # the first commit is under way, held by the store
        backend = engine.submit(alice, [Message(i, b"bob", b"m") for i in range(2, 27)])
        engine.on_message(bob, Message(1, b"alice", b"from a device"))
        store.hold_writes.set()
        await first
        answers = await backend
        assert [a.msg_id for a in answers] == list(range(2, 27))  # answered in order
        assert {a.status for a in answers} == {Status.SENT}
        assert sizes == [1, 11, 10, 5]  # the device's message and 10; then 10; then 5
        assert link.statuses() == [(1, Status.SENT)]
        assert engine.commit.uncommitted == 0

    run(tmp_path, _holding_writes(body))


def test_the_servers_own_announcements_are_not_held_to_the_apps_room(tmp_path: Path) -> None:
    """A group's announcements (system senders) follow a change already made: a backend
    that fills its app's room must not make them fail (they are few, and bounded by
    the changes that cause them)."""
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        _limited(engine, max_submitted=1000, max_app_submitted=1000)
        alice = await _sender(engine, b"alice")
        assert store.hold_writes is not None
        flood = engine.submit(alice, [Message(i, b"bob", b"m") for i in range(1, 1001)])
        with pytest.raises(BusyError):
            engine.submit(alice, [Message(5000, b"bob", b"m")])
        system = Sender(1, alice.user_id, b"@app", system=True)
        announced = engine.submit(system, [Message(7, b"", b"{}", group_id=99)])
        assert engine.submissions.total == 1000  # not counted
        store.hold_writes.set()
        await flood
        assert [a.status for a in await announced] == [Status.INVALID_DEST]
        assert engine.submissions.total == 0

    run(tmp_path, _holding_writes(body))
