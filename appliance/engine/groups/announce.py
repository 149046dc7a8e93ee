"""A group's announcements: its changes told to its members as system messages.

An announcement is a stored group MESSAGE from the app's reserved user
``@app`` with the server-set flag SYSTEM and a small UTF-8 JSON payload
(PROTOCOL.md §8.3)::

    {"event": "member_added", "group": 12, "by": "alice",
     "members": [{"address": "bob", "perms": ["send", "receive"]}]}

It goes through `Engine.submit` like any message (validation, dedupe by
(sender, id), group commit, fan-out, queues for offline members), so each is
stored once and delivered exactly once to each member's device.  SYSTEM lets it
reach the members although ``@app`` is none, and asks for no receipts: nobody
confirms them.  A change naming many members is told in several messages, each
within `limits.max_payload_bytes`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from appliance.engine.submit import Sender
from appliance.errors import ConflictError, StorageError
from appliance.names import APP_SENDER
from appliance.protocol.wire import STORED_U64_MAX, Message, Status
from appliance.protocol.wire.groups import FLAG_NAMES, PERM_NAMES, bit_names

if TYPE_CHECKING:
    from appliance.engine.core import Engine

log = logging.getLogger(__name__)

#: The events (PROTOCOL.md §8.3).
CREATED: Final = "created"
MEMBER_ADDED: Final = "member_added"
MEMBER_REMOVED: Final = "member_removed"
PERMS_CHANGED: Final = "perms_changed"
RENAMED: Final = "renamed"
FLAGS_CHANGED: Final = "flags_changed"
DELETED: Final = "deleted"
#: One announcement's payload at most, whatever the payload limit (a change of
#: thousands of members is told in several messages, each ~100 members).
MAX_ANNOUNCEMENT_BYTES: Final = 16 * 1024
#: Sends of an announcement whose commit failed, in the background, before giving up.
_ATTEMPTS: Final = 5
#: @app user ids kept per app (cleared beyond: they are read again).
_APP_USERS_MAX: Final = 10_000
#: Announcement ids have the top bit set, apart from the time-ordered ids the REST
#: API gives what an app sends as @app (`api.messages`): the two never collide.
_ID_SPACE: Final = STORED_U64_MAX + 1


@dataclass(frozen=True, slots=True)
class Announcement:
    """One change of a group, as its members learn it.

    `members`: (address, permission bits, or None where they do not apply:
    a removal).
    """

    event: str
    group_id: int
    by: bytes
    members: tuple[tuple[bytes, int | None], ...] = ()
    name: str | None = None
    flags: int | None = None

    def payloads(self, limit: int) -> list[bytes]:
        """The payloads telling it, each at most `limit` bytes (members split among them).

        An event without members is one payload; a member entry alone over
        `limit` still goes, alone (the store answers TOO_LARGE, which is logged).
        """
        head: dict[str, Any] = {"event": self.event, "group": self.group_id,
                                "by": self.by.decode("utf-8", "replace")}
        if self.name is not None:
            head["name"] = self.name
        if self.flags is not None:
            head["flags"] = bit_names(self.flags, FLAG_NAMES)
        if not self.members:
            return [_dump(head)]
        entries = [_dump(_member(address, perms)) for address, perms in self.members]
        base = len(_dump({**head, "members": []}))
        out: list[bytes] = []
        chunk: list[bytes] = []
        size = base
        for entry in entries:
            if chunk and size + len(entry) + 1 > limit:
                out.append(_joined(head, chunk))
                chunk, size = [], base
            chunk.append(entry)
            size += len(entry) + 1
        out.append(_joined(head, chunk))
        return out


def _member(address: bytes, perms: int | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"address": address.decode("utf-8", "replace")}
    if perms is not None:
        doc["perms"] = bit_names(perms, PERM_NAMES)
    return doc


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _joined(head: dict[str, Any], entries: list[bytes]) -> bytes:
    # The entries are JSON already: spliced in, not encoded twice.
    prefix = _dump({**head, "members": []})[:-2]  # without the closing "]}"
    return prefix + b",".join(entries) + b"]}"


class Announcer:
    """Sends announcements as ``@app`` of the group's app."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._app_users: dict[int, int] = {}
        self._last_id = 0

    def _next_id(self) -> int:
        candidate = _ID_SPACE | (self.engine.clock.wall_ms() << 20) | random.getrandbits(20)
        self._last_id = max(candidate, self._last_id + 1)
        return self._last_id

    async def sender(self, app_id: int) -> Sender:
        """The app's reserved user ``@app``, created on first use.

        Raises:
            StorageError: the store could not be read or written.
        """
        user = self._app_users.get(app_id)
        if user is None:
            store = self.engine.store
            found = await store.find_user(app_id, APP_SENDER.encode())
            if found is None:
                with contextlib.suppress(ConflictError):  # created meanwhile
                    await store.create_user(app_id, APP_SENDER, self.engine.clock.wall_ms())
                found = await store.find_user(app_id, APP_SENDER.encode())
            if found is None:  # deleted again at once: nothing to send as
                raise ConflictError(f"the app's user {APP_SENDER} could not be created")
            if len(self._app_users) >= _APP_USERS_MAX:
                self._app_users.clear()
            user = self._app_users[app_id] = found
        return Sender(app_id, user, APP_SENDER.encode(), system=True)

    def messages(self, announcement: Announcement) -> list[Message]:
        """The messages telling `announcement` (new ids; no receipts asked)."""
        limits = self.engine.limits
        limit = min(limits.max_payload_bytes, MAX_ANNOUNCEMENT_BYTES)
        return [Message(self._next_id(), b"", payload, group_id=announcement.group_id,
                        expiry_s=limits.max_expiry_s, flags=0)
                for payload in announcement.payloads(limit)]

    async def send(self, app_id: int, messages: list[Message]) -> list[Message]:
        """Submit `messages` once; return those the store refused for now (FAILED).

        Raises:
            StorageError: the ``@app`` user could not be read or created.
        """
        sender = await self.sender(app_id)
        answers = await self.engine.submit(sender, messages)
        failed = []
        for message, answer in zip(messages, answers, strict=True):
            if answer.status == Status.FAILED:
                failed.append(message)
            elif not answer.ok:  # TOO_LARGE (a tiny payload limit), INVALID_DEST (deleted)
                log.warning("announcement %d to group %d refused: %s", message.id,
                            message.group_id, answer.status.name)
        return failed

    async def announce(self, app_id: int, announcement: Announcement) -> bool:
        """Tell `announcement` now; whether every message of it was stored.

        Raises:
            StorageError: the ``@app`` user could not be read or created.
        """
        return not await self.send(app_id, self.messages(announcement))

    def resend_later(self, app_id: int, messages: list[Message]) -> None:
        """Send `messages` (refused FAILED) again in the background, with the same ids (the
        store's dedupe keeps each stored once), a few times while the store fails."""
        self.engine.scheduler.spawn(self._persist(app_id, messages), name="group-announcement")

    async def _persist(self, app_id: int, messages: list[Message]) -> None:
        delay = 0.5
        for attempt in range(1, _ATTEMPTS + 1):
            await self.engine.scheduler.sleep(delay)
            delay *= 2
            try:
                messages = await self.send(app_id, messages)
            except StorageError as exc:  # the @app user: read again next time
                log.warning("announcement to group %d not sent (attempt %d): %s",
                            messages[0].group_id, attempt, exc)
            if not messages:
                return
        log.error("announcement to group %d given up after %d attempts", messages[0].group_id,
                  _ATTEMPTS)
