"""The engine's cache of who blocks whom: bounded, dropped on change, never stale after a race."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from appliance.engine.blocks import NOBODY, BlockCache
from appliance.storage.sqlite import SqliteStorage

NOW = 1_700_000_000_000


class CountingStore(SqliteStorage):
    """A real store that counts `blocks_of` reads and can hold one until told."""

    reads = 0
    hold: asyncio.Event | None = None
    answered: asyncio.Event | None = None

    async def blocks_of(self, user_ids: Sequence[int]) -> dict[int, frozenset[int]]:
        self.reads += 1
        found = await super().blocks_of(user_ids)
        if self.hold is not None:
            assert self.answered is not None
            self.answered.set()
            await self.hold.wait()
        return found


async def _store(tmp: Path) -> tuple[CountingStore, list[int]]:
    base = await SqliteStorage.open(tmp / "b.sqlite3", NOW)
    store = CountingStore(base._writer, base._wpool, base._readers)
    users = [(await store.create_user(1, f"u{i}", NOW)).user_id for i in range(6)]
    await store.set_block(1, users[0], b"u1", True, NOW)
    await store.set_block(1, users[0], b"u2", True, NOW)
    return store, users


def test_a_user_is_read_once_then_answered_from_memory(tmp_path: Path) -> None:
    async def go() -> None:
        store, users = await _store(tmp_path)
        try:
            cache = BlockCache(store, max_users=100)
            assert cache.known(users[0]) is None
            assert cache.blocks(users[0], users[1]) is None
            found = await cache.load(users[:3])
            assert found == {users[0]: frozenset(users[1:3]), users[1]: NOBODY,
                             users[2]: NOBODY}
            assert await cache.load(users[:3]) == found
            assert store.reads == 1
            assert cache.blocks(users[0], users[2]) is True
            assert cache.blocks(users[1], users[0]) is False
            assert cache.known(users[1]) is NOBODY  # one shared object for most users
        finally:
            await store.close()
    asyncio.run(go())


def test_a_change_while_a_read_is_in_flight_is_never_cached_stale(tmp_path: Path) -> None:
    async def go() -> None:
        store, users = await _store(tmp_path)
        try:
            cache = BlockCache(store, max_users=100)
            store.hold, store.answered = asyncio.Event(), asyncio.Event()
            reading = asyncio.get_running_loop().create_task(cache.load([users[0]]))
            await store.answered.wait()  # the read has its answer, not yet the caller
            await store.set_block(1, users[0], b"u3", True, NOW)
            cache.forget([users[0]])
            store.hold.set()
            await reading  # the caller gets what it read; the cache keeps nothing of it
            assert cache.known(users[0]) is None
            store.hold = None
            assert users[3] in (await cache.load([users[0]]))[users[0]]
        finally:
            await store.close()
    asyncio.run(go())


def test_the_cache_stays_within_its_bound(tmp_path: Path) -> None:
    async def go() -> None:
        store, users = await _store(tmp_path)
        try:
            extra = [(await store.create_user(1, f"x{i}", NOW)).user_id for i in range(300)]
            cache = BlockCache(store, max_users=100)
            for user in extra:
                await cache.load([user])
                assert len(cache) <= 100
            await cache.load([users[0]])  # two blocked ids count against the bound too
            assert len(cache) <= 100
            assert cache.known(users[0]) == frozenset(users[1:3])
        finally:
            await store.close()
    asyncio.run(go())
