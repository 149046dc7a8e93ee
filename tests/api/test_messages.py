"""`BackendSender` in process (real engine, real SQLite store): what one array may cost."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from pathlib import Path
from typing import Any

import pytest

from appliance.api import messages
from appliance.api.messages import BackendSender
from appliance.engine.core import Engine
from appliance.errors import TooManyRequestsError
from appliance.storage.models import AppInfo
from appliance.transport.tasks import spawn
from tests.engine.test_delivery import FlakyStore, Scheduler, run

APP = AppInfo(1, "default", 0)


def _count_lookups(store: FlakyStore) -> list[bytes]:
    """The addresses `find_user` is asked for, in order (the store still answers)."""
    asked: list[bytes] = []
    real = store.find_user

    async def find_user(app_id: int, address: bytes) -> int | None:
        asked.append(address)
        return await real(app_id, address)

    store.find_user = find_user  # type: ignore[method-assign]
    return asked


def test_an_unknown_sender_repeated_costs_one_lookup(tmp_path: Path) -> None:
    """Attack: 1,000 items from one unknown ``from``.  Before, each cost a store read
    (an unknown sender is not cached): 1,000 reads for a 30 KB body."""
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        asked = _count_lookups(store)
        sender = BackendSender(engine, store)
        results = await sender.send_batch(APP, [{"from": "ghost", "to": "bob", "text": "x"}]
                                           * 1000)
        assert {r["error"]["field"] for r in results} == {"from"}
        assert asked == [b"ghost"]

    run(tmp_path, body)


def test_a_full_budget_refuses_the_array_before_parsing_it(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        engine.limits = dataclasses.replace(engine.limits, max_submitted=2000,
                                            max_app_submitted=1000)
        asked = _count_lookups(store)
        sender = BackendSender(engine, store)
        # alice is looked up (and cached) now: the array below is then taken in one turn.
        await sender.send_batch(APP, [{"from": "alice", "to": "bob", "text": "warm"}])
        store.hold_writes = asyncio.Event()
        try:
            first = spawn(sender.send_batch(
                APP, [{"from": "alice", "to": "bob", "text": f"{i}"} for i in range(1000)]),
                name="first-array")
            await asyncio.sleep(0)
            assert engine.submissions.total == 1000
            asked.clear()
            with pytest.raises(TooManyRequestsError):
                await sender.send_batch(APP, [{"from": "carol", "to": "bob", "text": "x"}])
            assert asked == []  # refused before a single item was looked at
        finally:
            store.hold_writes.set()
        assert {r["status"] for r in await first} == {"SENT"}

    run(tmp_path, body)


def test_an_array_not_answered_in_time_names_each_id(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline passes while the store holds the commit: each item's problem carries
    its id (given or assigned), so the backend can resend it without duplicates; and no
    future is left with an exception nobody retrieved (a log line per request)."""
    monkeypatch.setattr(messages, "_TIMEOUT_S", 0.05)
    unretrieved: list[dict[str, Any]] = []

    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: unretrieved.append(context))
        sender = BackendSender(engine, store)
        store.hold_writes = asyncio.Event()
        try:
            results = await sender.send_batch(APP, [
                {"from": "alice", "to": "bob", "text": "given", "id": 7},
                {"from": "bob", "to": "alice", "text": "assigned"},
                {"from": "alice", "to": "bob", "text": "again", "id": 8}])
        finally:
            store.hold_writes.set()
        assert [r["error"]["status"] for r in results] == [503, 503, 503]
        ids = [r["error"]["id"] for r in results]
        assert (ids[0], ids[2]) == (7, 8)
        assert ids[1] > 8
        store.hold_writes = asyncio.Event()
        try:
            with pytest.raises(messages.ApiError) as single:
                await sender.send(APP, {"from": "alice", "to": "bob", "text": "one"})
        finally:
            store.hold_writes.set()
        assert single.value.status == 503
        assert single.value.extra["id"] > 0
        await sched.settle()
        gc.collect()
        await asyncio.sleep(0)
        assert unretrieved == []

    run(tmp_path, body)


def test_arrays_waiting_on_their_senders_lookups_hold_room_too(tmp_path: Path) -> None:
    """Attack: arrays of 1,000 distinct unknown senders.  Before, the room was taken only
    once every sender was looked up, so any number of arrays sat in their 1,000 reads
    each, holding their results meanwhile: 8 connections x 50 streams held +230 MiB
    and no array was answered within 8 s."""
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        engine.limits = dataclasses.replace(engine.limits, max_submitted=2000,
                                            max_app_submitted=1000)
        slow = asyncio.Event()
        real = store.find_user

        async def find_user(app_id: int, address: bytes) -> int | None:
            await slow.wait()  # a store that answers slowly (or an attacker's many reads)
            return await real(app_id, address)

        store.find_user = find_user  # type: ignore[method-assign]
        asked = _count_lookups(store)
        sender = BackendSender(engine, store)
        array = [{"from": f"nobody{i}", "to": "bob", "text": ""} for i in range(1000)]
        first = spawn(sender.send_batch(APP, array), name="first-array")
        await asyncio.sleep(0)
        assert asked == [b"nobody0"]  # waiting on its first lookup
        with pytest.raises(TooManyRequestsError):  # (before the fix: it waited, in lookups)
            await asyncio.wait_for(sender.send_batch(APP, array), 5)
        assert asked == [b"nobody0"]  # the second array was refused before any lookup
        slow.set()
        assert {r["error"]["field"] for r in await first} == {"from"}
        assert engine.submissions.total == 0  # an array's unused room comes back
        assert len(await sender.send_batch(APP, array[:10])) == 10

    run(tmp_path, body)


def test_one_array_from_several_senders_is_one_commit(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        sender = BackendSender(engine, store)
        commits = engine.commits
        results = await sender.send_batch(APP, [
            {"from": "alice", "to": "bob", "text": "1"}, {"from": "bob", "to": "alice",
                                                          "text": "2"},
            {"text": "3", "to": "alice"}])
        assert [r["status"] for r in results] == ["SENT"] * 3
        # The app's own sender (@app) is created by the first array that uses it: a commit
        # of its own; the three messages share one.
        assert engine.commits <= commits + 2
        assert len({r["timestamp_ms"] for r in results}) == 1

    run(tmp_path, body)


def test_an_array_whose_request_is_cancelled_leaves_no_unretrieved_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client resets its stream while the store holds the commit (the handler is
    cancelled); the deadline then fails each sender's future.  Nobody awaits them any
    more: before, each logged "Future exception was never retrieved" (up to 1,000
    error lines per request, an attacker's log flood)."""
    monkeypatch.setattr(messages, "_TIMEOUT_S", 0.05)
    unretrieved: list[dict[str, Any]] = []

    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: unretrieved.append(context))
        sender = BackendSender(engine, store)
        await sender.send_batch(APP, [{"from": "bob", "to": "alice", "text": "warm"},
                                      {"from": "alice", "to": "bob", "text": "warm"}])
        store.hold_writes = asyncio.Event()
        try:
            task = spawn(sender.send_batch(APP, [
                {"from": "alice", "to": "bob", "text": "a"},
                {"from": "bob", "to": "alice", "text": "b"}]), name="reset-array")
            await asyncio.sleep(0)
            assert engine.submissions.total == 2  # submitted: its senders were cached
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.1)  # the deadline passes (50 ms)
        finally:
            store.hold_writes.set()
        await sched.settle()
        gc.collect()
        await asyncio.sleep(0)
        assert unretrieved == []

    run(tmp_path, body)
