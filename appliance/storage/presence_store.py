"""Last seen, privacy, contacts and blocks in the store (issue 16): part of `interface.Storage`."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from appliance.storage.models import (
    PresenceRecord,
    Privacy,
)


class PresenceStore(Protocol):
    """Last-seen times, presence privacy, contacts and blocks (issue 16, SPEC M6).

    Nothing crosses apps: contacts and blocks link users of one app, set by
    address within it.  Every change is logged in the credential change log
    under the user it changes (the one whose privacy or contacts changed, the
    one who blocks), so that every server process re-checks what that user
    shows to whom (`CredentialStore.credential_changes`).  A user's last-seen
    time is written by the group commit (`WriteBatch.last_seen`).
    """

    async def presence_of(self, app_id: int, viewer_id: int | None,
                          addresses: Sequence[bytes]) -> list[PresenceRecord | None]:
        """What `viewer_id` (None: the app itself, which sees everything) may know of
        the users at `addresses` in the app: one record per address, in order, None
        for an address that names no user of the app.

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def presence_viewers(self, user_id: int, viewer_ids: Collection[int]) -> set[int]:
        """Which of `viewer_ids` may see the presence of `user_id` now (none once the
        user is gone).

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def blocks_of(self, user_ids: Sequence[int]) -> dict[int, frozenset[int]]:
        """For each user, the ids of the users it blocks (an empty set when none).

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def blocks(self, app_id: int, user_id: int) -> list[bytes]:
        """The addresses `user_id` blocks, in address order.

        Raises:
            NotFoundError: no such user in the app.
        """
        ...

    async def set_block(self, app_id: int, user_id: int, address: bytes, blocked: bool,
                        now_ms: int) -> bool:
        """Block (or with False, unblock) the user at `address` for `user_id`; whether
        anything changed.

        Raises:
            NotFoundError: either user is not of the app.
            ConflictError: `user_id` already blocks the most users it may.
            StorageError: a user blocking itself.
        """
        ...

    async def privacy(self, app_id: int, user_id: int) -> Privacy:
        """Who may see the user's presence.

        Raises:
            NotFoundError: no such user in the app.
        """
        ...

    async def set_privacy(self, app_id: int, user_id: int, privacy: int) -> None:
        """Set who may see the user's presence (a `Privacy` value).

        Raises:
            NotFoundError: no such user in the app.
            StorageError: an unknown value.
        """
        ...

    async def contacts(self, app_id: int, user_id: int) -> list[bytes]:
        """The addresses of the user's contacts, in address order.

        Raises:
            NotFoundError: no such user in the app.
        """
        ...

    async def set_contacts(self, app_id: int, user_id: int, addresses: Sequence[bytes]
                           ) -> list[bytes]:
        """Replace the user's contacts by the users at `addresses` in the app; returns
        the addresses that name no user (left out).

        Raises:
            NotFoundError: no such user in the app.
            StorageError: more than the most contacts a user may have.
        """
        ...
