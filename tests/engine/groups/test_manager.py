"""Group changes by the app's backend (actor None) and their announcements, exactly once.

On a real SQLite store that can be made to fail its group commits
(`FlakyStore`), and on SQLite and MariaDB for the rest.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.config.limits import EngineLimits
from appliance.engine.clock import FakeClock
from appliance.engine.core import Engine
from appliance.engine.groups import Actor
from appliance.errors import (
    ForbiddenError,
    GroupNotFoundError,
    MemberNotFoundError,
    StorageUnavailableError,
    UsageError,
)
from appliance.storage.models import GroupFlag, Perm
from appliance.storage.sqlite import SqliteStorage
from tests.engine.groups.harness import World, announcements, run
from tests.engine.test_delivery import FlakyStore, Scheduler
from tests.storage.conftest import (
    Opener,
    backend as backend,  # the fixture: SQLite and MariaDB
)


def test_the_app_changes_anything_and_is_named_at_app(backend: Opener) -> None:
    async def body(w: World) -> None:
        for name in ("alice", "bob", "carol"):
            await w.user(name)
        _, bob_link = await w.connect("bob")
        groups = w.engine.groups
        info = await groups.create(1, "team", [(b"alice", Perm.ALL), (b"bob", Perm.DEFAULT)])
        assert [m.address for m in info.members] == [b"alice", b"bob"]
        info = await groups.change(1, info.group_id, [(b"carol", Perm.RECEIVE),
                                                      (b"bob", Perm.RECEIVE)], [b"alice"])
        assert [(m.address, m.perms) for m in info.members] == [(b"bob", Perm.RECEIVE),
                                                                (b"carol", Perm.RECEIVE)]
        await w.settle()
        assert [(a["event"], a["by"], [m["address"] for m in a["members"]])
                for a in announcements(bob_link)] == [
            ("created", "@app", ["alice", "bob"]),
            ("member_removed", "@app", ["alice"]),  # before the change
            ("member_added", "@app", ["carol"]),
            ("perms_changed", "@app", ["bob"])]
        # @app was created on first use, and is no member.
        assert await w.store.find_user(1, b"@app") is not None
        assert b"@app" not in [m.address for m in info.members]
    run(backend, body)


def test_refusals_are_typed(backend: Opener) -> None:
    async def body(w: World) -> None:
        alice, bob = await w.user("alice"), await w.user("bob")
        groups = w.engine.groups
        info = await groups.create(1, "g", [(b"bob", Perm.DEFAULT)], by=Actor(alice, b"alice"))
        gid = info.group_id
        with pytest.raises(GroupNotFoundError):
            await groups.update(1, gid + 1, name="x")
        with pytest.raises(GroupNotFoundError):
            await groups.update(2, gid, name="x")  # another app
        with pytest.raises(ForbiddenError):
            await groups.update(1, gid, name="x", by=Actor(bob, b"bob"))
        with pytest.raises(UsageError):
            await groups.update(1, gid, name="")
        with pytest.raises(UsageError):
            await groups.update(1, gid, flags=GroupFlag.ALL + 1)
        with pytest.raises(UsageError):
            await groups.change(1, gid, [(b"bob", 1)], [b"bob"])
        with pytest.raises(MemberNotFoundError):
            await groups.change(1, gid, [(b"carol", 1)])
        with pytest.raises(MemberNotFoundError):
            await groups.change(1, gid, [], [b"nobody"])
        with pytest.raises(UsageError):
            await groups.create(1, "x" * 256, [])
        assert (await w.store.get_group(1, gid)).name == "g"
    run(backend, body)


def _flaky(tmp_path: Path, body: object) -> None:
    async def main() -> None:
        clock = FakeClock()
        base = await SqliteStorage.open(tmp_path / "f.sqlite3", clock.wall_ms())
        store = FlakyStore(base._writer, base._wpool, base._readers)
        sched = Scheduler()
        engine = Engine(store, clock, EngineLimits(commit_window_ms=0.0), sched)
        try:
            await body(World(engine, store, sched, clock), store)  # type: ignore[operator]
        finally:
            await sched.settle()
            await store.close()
    asyncio.run(main())


def test_a_removal_whose_announcement_fails_is_refused(tmp_path: Path) -> None:
    async def body(w: World, store: FlakyStore) -> None:
        for name in ("alice", "bob"):
            await w.user(name)
        _, bob_link = await w.connect("bob")
        info = await w.engine.groups.create(1, "g", [(b"alice", 3), (b"bob", 3)])
        await w.settle()
        store.failing = True
        with pytest.raises(StorageUnavailableError):
            await w.engine.groups.change(1, info.group_id, [], [b"bob"])
        with pytest.raises(StorageUnavailableError):
            await w.engine.groups.delete(1, info.group_id)
        store.failing = False
        assert await w.store.get_group(1, info.group_id) == info
        await w.settle()
        assert [a["event"] for a in announcements(bob_link)] == ["created"]
    _flaky(tmp_path, body)


def test_an_announcement_that_failed_after_the_change_goes_later_exactly_once(
        tmp_path: Path) -> None:
    async def body(w: World, store: FlakyStore) -> None:
        for name in ("alice", "bob", "carol"):
            await w.user(name)
        _, bob_link = await w.connect("bob")
        info = await w.engine.groups.create(1, "g", [(b"alice", 3), (b"bob", 3)])
        await w.settle()
        store.failing = True
        changed = await w.engine.groups.change(1, info.group_id, [(b"carol", 3)])
        assert len(changed.members) == 3  # the change stands
        store.failing = False  # the background retry (same ids) finds the store back
        await w.settle()
        assert [a["event"] for a in announcements(bob_link)] == ["created", "member_added"]
        _, carol_link = await w.connect("carol")
        assert [a["event"] for a in announcements(carol_link)] == ["member_added"]
    _flaky(tmp_path, body)
