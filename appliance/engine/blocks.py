"""Who blocks whom, for the real-time path: a bounded cache over `PresenceStore.blocks_of`.

The relay (real-time messages) and presence (typing) ask whether a user
blocks another on every message: a store read each would cost the 1:1 relay
its speed (performance.md: hundreds of nanoseconds per message).  So each
user's blocks (whom it blocks, at most `storage.sql.presence.MAX_BLOCKS`)
are read once and kept here.  `known` is the hot path's bound `dict.get`;
a miss sends the caller to the slow path, which `load`s and retries.

Bounded: at most ``limits.max_cached_blocks`` users, and as many blocked
ids in all; past either, the oldest quarter is forgotten (read again when
needed).  A change (this process's REST API, or another process's, through
the credential change log) drops the user's entry (`forget`); a read that
was in flight across a change is not cached.  Reliable messages are decided
by the writer from its own cache (`appliance.storage.sql.directory`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from appliance.storage.interface import Storage

#: The entry of a user who blocks nobody (most users): one shared object.
NOBODY: frozenset[int] = frozenset()


class BlockCache:
    """Users' blocks (whom each blocks), cached for the real-time path."""

    __slots__ = ("_blocks", "_generation", "_held", "_store", "known", "max_users")

    def __init__(self, store: Storage, max_users: int) -> None:
        self._store = store
        self.max_users = max_users
        self._blocks: dict[int, frozenset[int]] = {}
        #: Blocked ids held in all entries (bounded like the users).
        self._held = 0
        self._generation = 0
        #: `known(user)`: whom `user` blocks, or None when not cached (then `load`).
        self.known: Callable[[int], frozenset[int] | None] = self._blocks.get

    def blocks(self, user: int, other: int) -> bool | None:
        """Whether `user` blocks `other`; None when not cached."""
        found = self._blocks.get(user)
        return None if found is None else other in found

    async def load(self, users: Iterable[int]) -> dict[int, frozenset[int]]:
        """Whom each of `users` blocks, read from the store for those not cached.

        Raises:
            StorageError: the store cannot be read.
        """
        wanted = list(dict.fromkeys(users))
        cached = self._blocks
        missing = [u for u in wanted if u not in cached]
        read: dict[int, frozenset[int]] = {}
        if missing:
            generation = self._generation
            read = await self._store.blocks_of(missing)
            if generation == self._generation:  # no change while we read
                for user in missing:
                    self._keep(user, read.get(user) or NOBODY)
        return {u: cached.get(u) or read.get(u) or NOBODY for u in wanted}

    def _keep(self, user: int, blocked: frozenset[int]) -> None:
        cached = self._blocks
        if user in cached:
            return
        if len(cached) >= self.max_users or self._held + len(blocked) > self.max_users:
            for old in list(cached)[:max(1, len(cached) // 4)]:
                self._held -= len(cached.pop(old))
        cached[user] = blocked if blocked else NOBODY
        self._held += len(blocked)

    def forget(self, users: Collection[int]) -> None:
        """These users' blocks changed (or may have): read them again when needed."""
        self._generation += 1
        cached = self._blocks
        for user in users:
            gone = cached.pop(user, None)
            if gone is not None:
                self._held -= len(gone)

    def __len__(self) -> int:
        return len(self._blocks)
