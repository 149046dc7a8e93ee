"""Changing groups: one implementation for the app's REST API and for members' clients.

Every operation is scoped to one app: a group of another app is "no such
group", an address is looked up in the caller's app only.  A member's change
(`Actor`) needs the ADMIN permission (leaving needs only membership); the
app's backend (actor None) may do anything to its groups.  Each change is
announced to the members (`announce`): a removal and a deletion *before* the
change, so that those who leave hear it too, and only if that announcement was
stored; additions, permissions, renames and flags *after* it, retried in the
background while the store fails.

A deleted group's accepted messages are still delivered (its members' queues
keep them) and their reports still reach their senders; new messages to it are
INVALID_DEST.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from appliance.engine.groups.announce import (
    CREATED,
    DELETED,
    FLAGS_CHANGED,
    MEMBER_ADDED,
    MEMBER_REMOVED,
    PERMS_CHANGED,
    RENAMED,
    Announcement,
    Announcer,
)
from appliance.errors import (
    ForbiddenError,
    GroupFullError,
    GroupNotFoundError,
    MemberNotFoundError,
    StorageUnavailableError,
    UsageError,
)
from appliance.names import RESERVED_PREFIX, check_group_name
from appliance.protocol.wire.groups import MAX_GROUP_MEMBERS
from appliance.storage.models import GroupFlag, GroupInfo, GroupRoster, Perm

if TYPE_CHECKING:
    from appliance.engine.core import Engine
    from appliance.engine.groups.requests import GroupRequests

_RESERVED = RESERVED_PREFIX.encode()


@dataclass(frozen=True, slots=True)
class Actor:
    """A member changing a group from a client."""

    user_id: int
    address: bytes


class GroupManager:
    """Group changes and their announcements (see the module)."""

    def __init__(self, engine: Engine) -> None:
        self.store = engine.store
        self.clock = engine.clock
        self.announcer = Announcer(engine)
        #: GROUP_MANAGE from clients (`install` sets it).
        self.requests: GroupRequests | None = None

    # --- reading what a change needs -------------------------------------------------

    async def _roster(self, app_id: int, group_id: int, by: Actor | None, *,
                      admin: bool = True) -> GroupRoster:
        """The group, once `by` may change it (ADMIN; or membership: `admin` False)."""
        roster = await self.store.group_roster(app_id, group_id) if group_id > 0 else None
        if roster is None:
            raise GroupNotFoundError(f"no group {group_id}")
        if by is not None:
            perms = roster.members.get(by.user_id)
            if perms is None or (admin and not perms & Perm.ADMIN):
                raise ForbiddenError("only a member with the admin permission may change"
                                     " this group" if admin else "not a member of this group")
        return roster

    async def _users(self, app_id: int, addresses: Sequence[bytes]) -> list[int]:
        """The user ids of `addresses` in the app, in order.

        Raises:
            UsageError: an address is given twice.
            MemberNotFoundError: an address names no user of the app (the
                server's reserved ones included).
        """
        if len(set(addresses)) != len(addresses):
            raise UsageError("an address is given twice")
        found = []
        for address in addresses:
            user = (None if address.startswith(_RESERVED)
                    else await self.store.find_user(app_id, address))
            if user is None:
                raise MemberNotFoundError(
                    f"no user {address.decode('utf-8', 'replace')!r} in this app")
            found.append(user)
        return found

    # --- the changes --------------------------------------------------------------------

    async def create(self, app_id: int, name: str, members: Sequence[tuple[bytes, int]],
                     flags: int = GroupFlag.DEFAULT, by: Actor | None = None) -> GroupInfo:
        """A new group with `members` ((address, `Perm` bits)); `by` joins with every
        permission.  Announced as ``created`` to all of them.

        Raises:
            UsageError: a bad name or flags, an address given twice (`by`'s too).
            MemberNotFoundError: an address names no user of the app.
            StorageError: the store failed (nothing was created).
        """
        name = check_group_name(name)
        if not 0 <= flags <= GroupFlag.ALL:
            raise UsageError(f"group flags must be 0..{GroupFlag.ALL}, got {flags}")
        addresses = [address for address, _ in members]
        if by is not None:
            addresses.append(by.address)
        users = await self._users(app_id, addresses)
        rows = [(user, perms) for user, (_, perms) in zip(users[:len(members)], members,
                                                          strict=True)]
        if by is not None:
            rows.append((by.user_id, Perm.ALL))
        if len(rows) > MAX_GROUP_MEMBERS:
            raise GroupFullError(f"a group has at most {MAX_GROUP_MEMBERS} members")
        info = await self.store.create_group(app_id, name, self.clock.wall_ms(), flags, rows)
        await self._after(app_id, Announcement(
            CREATED, info.group_id, await self._by_address(app_id, by), _entries(info),
            name=info.name, flags=info.flags))
        return info

    async def update(self, app_id: int, group_id: int, *, name: str | None = None,
                     flags: int | None = None, by: Actor | None = None) -> GroupInfo:
        """Rename the group and/or set its `GroupFlag` bits; announced after the change.

        Raises:
            GroupNotFoundError, ForbiddenError, UsageError, StorageError.
        """
        if name is not None:
            name = check_group_name(name)
        if flags is not None and not 0 <= flags <= GroupFlag.ALL:
            raise UsageError(f"group flags must be 0..{GroupFlag.ALL}, got {flags}")
        await self._roster(app_id, group_id, by)
        info = await self.store.update_group(app_id, group_id, name=name, flags=flags)
        who = await self._by_address(app_id, by)
        if name is not None:
            await self._after(app_id, Announcement(RENAMED, group_id, who, name=info.name))
        if flags is not None:
            await self._after(app_id, Announcement(FLAGS_CHANGED, group_id, who,
                                                         flags=info.flags))
        return info

    async def change(self, app_id: int, group_id: int, upserts: Sequence[tuple[bytes, int]],
                     removals: Sequence[bytes] = (), by: Actor | None = None, *,
                     existing: bool = False) -> GroupInfo:
        """Add members or set their permissions (`existing`: only members already), and
        remove members, in one change.

        The removed hear of it first (``member_removed``, before the change: it is
        refused if that could not be stored); then ``member_added`` and
        ``perms_changed`` follow.

        Raises:
            GroupNotFoundError, ForbiddenError: see `_roster`.
            MemberNotFoundError: an address names no user of the app, or no member
                (one to remove, or one to re-permission with `existing`).
            UsageError: an address given twice, or both added and removed.
            StorageError: the store failed.
        """
        roster = await self._roster(app_id, group_id, by)
        added = await self._users(app_id, [address for address, _ in upserts])
        gone = await self._users(app_id, removals)
        if set(added) & set(gone):
            raise UsageError("an address is both added and removed")
        members = roster.members
        named = [*zip(removals, gone, strict=True)]
        if existing:
            named += [(address, user) for (address, _), user in zip(upserts, added, strict=True)]
        for address, user in named:
            if user not in members:
                raise MemberNotFoundError(
                    f"{address.decode('utf-8', 'replace')!r} is not a member of this group")
        # Before the removals are announced: a change refused for the group's size
        # must not have told anyone of it (the store checks again, in its transaction).
        if len((members.keys() - set(gone)) | set(added)) > MAX_GROUP_MEMBERS:
            raise GroupFullError(f"a group has at most {MAX_GROUP_MEMBERS} members")
        who = await self._by_address(app_id, by)
        if removals and not await self.announcer.announce(app_id, Announcement(
                MEMBER_REMOVED, group_id, who, tuple((a, None) for a in removals))):
            raise StorageUnavailableError("the store could not take the announcement;"
                                          " nothing changed, try again")
        rows = [(user, perms) for user, (_, perms) in zip(added, upserts, strict=True)]
        info = await self.store.change_members(app_id, group_id, rows, gone)
        new = tuple((a, p) for (a, p), u in zip(upserts, added, strict=True) if u not in members)
        changed = tuple((a, p) for (a, p), u in zip(upserts, added, strict=True)
                        if u in members and members[u] != p)
        if new:
            await self._after(app_id, Announcement(MEMBER_ADDED, group_id, who, new))
        if changed:
            await self._after(app_id, Announcement(PERMS_CHANGED, group_id, who, changed))
        return info

    async def leave(self, app_id: int, group_id: int, by: Actor) -> GroupInfo:
        """`by` leaves the group (``member_removed``, told before it goes).

        Raises:
            GroupNotFoundError, ForbiddenError (not a member), StorageError.
        """
        await self._roster(app_id, group_id, by, admin=False)
        if not await self.announcer.announce(app_id, Announcement(
                MEMBER_REMOVED, group_id, by.address, ((by.address, None),))):
            raise StorageUnavailableError("the store could not take the announcement;"
                                          " nothing changed, try again")
        return await self.store.change_members(app_id, group_id, (), (by.user_id,))

    async def delete(self, app_id: int, group_id: int, by: Actor | None = None) -> None:
        """Delete the group (``deleted``, told to its members before it goes).

        Raises:
            GroupNotFoundError, ForbiddenError, StorageError.
        """
        await self._roster(app_id, group_id, by)
        if not await self.announcer.announce(app_id, Announcement(
                DELETED, group_id, await self._by_address(app_id, by))):
            raise StorageUnavailableError("the store could not take the announcement;"
                                          " nothing changed, try again")
        await self.store.delete_group(app_id, group_id)

    # --- announcements ------------------------------------------------------------------

    async def _by_address(self, app_id: int, by: Actor | None) -> bytes:
        if by is not None:
            return by.address
        return (await self.announcer.sender(app_id)).address

    async def _after(self, app_id: int, announcement: Announcement) -> None:
        """Tell a change that is made: now if the store takes it, else in the background."""
        messages = self.announcer.messages(announcement)
        failed = await self.announcer.send(app_id, messages)
        if failed:
            self.announcer.resend_later(app_id, failed)


def _entries(info: GroupInfo) -> tuple[tuple[bytes, int | None], ...]:
    return tuple((m.address, m.perms) for m in info.members)
