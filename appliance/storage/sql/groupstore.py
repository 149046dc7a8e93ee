"""Groups on the SQL backends: the async `AdminStore` group methods and the receipts read.

A mixin of `SqlStorage`, which supplies the thread hand-offs (`_admin`: a
transaction of its own on the writer thread that raises the directory version,
so every writer's cached rosters are dropped; `_read`: a reader thread).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from appliance.errors import StorageError
from appliance.storage.models import GroupFlag, GroupInfo, MessageReceipts
from appliance.storage.sql import admin, aggregate

T = TypeVar("T")

#: The most member statuses one `message_receipts` call returns.
MAX_RECEIPTS_PAGE = 1000


class SqlGroupStore:
    """The group methods of `SqlStorage`."""

    clock_ms: Callable[[], int]

    async def _read(self, fn: Callable[..., T], *args: object) -> T:
        raise NotImplementedError  # SqlStorage's

    async def _admin(self, fn: Callable[..., T], *args: object) -> T:
        raise NotImplementedError  # SqlStorage's

    async def create_group(self, app_id: int, name: str, now_ms: int,
                           flags: int = GroupFlag.DEFAULT,
                           members: Sequence[tuple[int, int]] = ()) -> GroupInfo:
        """See `AdminStore.create_group`."""
        _check_flags(flags)
        return await self._admin(admin.create_group, app_id, name, now_ms, flags,
                                 tuple(members))

    async def update_group(self, app_id: int, group_id: int, *, name: str | None = None,
                           flags: int | None = None) -> GroupInfo:
        """See `AdminStore.update_group`."""
        if flags is not None:
            _check_flags(flags)
        return await self._admin(admin.update_group, app_id, group_id, name, flags)

    async def change_members(self, app_id: int, group_id: int,
                             upserts: Sequence[tuple[int, int]],
                             removals: Sequence[int] = ()) -> GroupInfo:
        """See `AdminStore.change_members`."""
        return await self._admin(admin.change_members, app_id, group_id, tuple(upserts),
                                 tuple(removals))

    async def delete_group(self, app_id: int, group_id: int) -> None:
        """See `AdminStore.delete_group`."""
        await self._admin(admin.delete_group, app_id, group_id, self.clock_ms())

    async def set_member(self, app_id: int, group_id: int, user_id: int, perms: int) -> None:
        """See `AdminStore.set_member`."""
        await self._admin(admin.set_member, app_id, group_id, user_id, perms)

    async def remove_member(self, app_id: int, group_id: int, user_id: int) -> None:
        """See `AdminStore.remove_member`."""
        await self._admin(admin.remove_member, app_id, group_id, user_id)

    async def get_group(self, app_id: int, group_id: int) -> GroupInfo:
        """See `AdminStore.get_group`."""
        return await self._read(admin.get_group, app_id, group_id)

    async def list_groups(self, app_id: int, after: int = 0, limit: int | None = None,
                          max_members: int | None = None) -> list[GroupInfo]:
        """See `AdminStore.list_groups`."""
        return await self._read(admin.list_groups, app_id, after, limit, max_members)

    async def message_receipts(self, app_id: int, sender_id: int, msg_id: int,
                               after: bytes = b"", limit: int = 100) -> MessageReceipts | None:
        """See `MessageStore.message_receipts`."""
        if not 1 <= limit <= MAX_RECEIPTS_PAGE:
            raise StorageError(f"receipts page of {limit}, not 1..{MAX_RECEIPTS_PAGE}")
        return await self._read(aggregate.message_receipts, app_id, sender_id, msg_id, after,
                                limit)


def _check_flags(flags: int) -> None:
    if not 0 <= flags <= GroupFlag.ALL:
        raise StorageError(f"group flags {flags} out of range 0..{GroupFlag.ALL}")
