"""`PresenceStore` on the SQL backends: the async methods over `appliance.storage.sql.presence`.

A mixin of `SqlStorage`, which supplies the thread hand-offs (`_read` on a
reader thread; `_admin` and `_meta` in a transaction of their own on the
writer thread).  A block goes through `_admin`: it raises the directory
version, so every process's writer drops its cached blocks (the message
path reads them from its cache, `appliance.storage.sql.directory`).
Privacy and contacts do not concern the message path (`_meta`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

from appliance.storage.models import PresenceRecord, Privacy
from appliance.storage.sql import presence

T = TypeVar("T")


class SqlPresenceStore:
    """The `PresenceStore` methods of `SqlStorage`."""

    async def _read(self, fn: Callable[..., T], *args: object) -> T:
        raise NotImplementedError  # SqlStorage's

    async def _admin(self, fn: Callable[..., T], *args: object) -> T:
        raise NotImplementedError  # SqlStorage's

    async def _meta(self, fn: Callable[..., T], *args: object, durable: bool = True) -> T:
        raise NotImplementedError  # SqlStorage's

    async def presence_of(self, app_id: int, viewer_id: int | None,
                          addresses: Sequence[bytes]) -> list[PresenceRecord | None]:
        """See `PresenceStore.presence_of`."""
        return await self._read(presence.presence_of, app_id, viewer_id, list(addresses))

    async def presence_viewers(self, user_id: int, viewer_ids: Collection[int]) -> set[int]:
        """See `PresenceStore.presence_viewers`."""
        return await self._read(presence.presence_viewers, user_id, list(viewer_ids))

    async def blocks_of(self, user_ids: Sequence[int]) -> dict[int, frozenset[int]]:
        """See `PresenceStore.blocks_of`."""
        return await self._read(presence.blocks_of, list(user_ids))

    async def blocks(self, app_id: int, user_id: int) -> list[bytes]:
        """See `PresenceStore.blocks`."""
        return await self._read(presence.list_blocks, app_id, user_id)

    async def set_block(self, app_id: int, user_id: int, address: bytes, blocked: bool,
                        now_ms: int) -> bool:
        """See `PresenceStore.set_block`."""
        return await self._admin(presence.set_block, app_id, user_id, address, blocked, now_ms)

    async def privacy(self, app_id: int, user_id: int) -> Privacy:
        """See `PresenceStore.privacy`."""
        return await self._read(presence.privacy, app_id, user_id)

    async def set_privacy(self, app_id: int, user_id: int, privacy: int) -> None:
        """See `PresenceStore.set_privacy`."""
        await self._meta(presence.set_privacy, app_id, user_id, privacy)

    async def contacts(self, app_id: int, user_id: int) -> list[bytes]:
        """See `PresenceStore.contacts`."""
        return await self._read(presence.list_contacts, app_id, user_id)

    async def set_contacts(self, app_id: int, user_id: int, addresses: Sequence[bytes]
                           ) -> list[bytes]:
        """See `PresenceStore.set_contacts`."""
        return await self._meta(presence.set_contacts, app_id, user_id, list(addresses))
