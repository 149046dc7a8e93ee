"""The one storage interface the engine and the admin service talk to.

Backends (`appliance.storage.sqlite`, later MariaDB) implement `Storage` and
pass the same contract tests (`tests/storage/test_contract.py`).  Every
method raises only `appliance.errors.StorageError` subclasses; driver
exceptions never cross this boundary.

Durability contract (SPEC M4, M14): when `write` returns, everything in the
batch is committed with a synchronous fsync (SQLite ``synchronous=FULL``).
Nothing in a batch is visible to readers before that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from appliance.storage.certificate_store import CertificateStore
from appliance.storage.file_store import FileStore
from appliance.storage.models import (
    AppInfo,
    CredentialChange,
    DeviceRecord,
    GroupFlag,
    GroupInfo,
    GroupMember,
    GroupRoster,
    Login,
    MessageReceipts,
    Pending,
    Principal,
    Receipt,
    UserInfo,
    WriteBatch,
    WriteResult,
)
from appliance.storage.presence_store import PresenceStore


class MessageStore(Protocol):
    """Messages, per-device delivery state and status reports."""

    async def write(self, batch: WriteBatch, now_ms: int) -> WriteResult:
        """Commit `batch` in one durable transaction and report what it did.

        With `batch.quota`, a new message that would put its recipient or its
        app over the queue quota is REJECTED with INBOX_FULL (0x88) and not
        stored; a group message skips the members that are full (SPEC M13).
        Usage is counted from the tables, so it holds across restarts.

        Raises:
            StorageUnavailableError: nothing of the batch was committed.
        """
        ...

    async def pending(self, device_rowid: int, user_id: int, now_ms: int, limit: int,
                      exclude: frozenset[int] = frozenset()) -> list[Pending]:
        """Messages queued for a device, highest priority first, then oldest first.

        Expired messages are left out; so are the handles in `exclude`.

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def pending_receipts(self, user_id: int, after_seq: int, limit: int,
                               device_rowid: int = 0) -> list[Receipt]:
        """Stored status reports for `user_id` with report_seq above `after_seq`.

        With `device_rowid`, also above the report cursor stored for that
        device (what it confirmed, as committed when the read runs).

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def sweep(self, now_ms: int, retention_ms: int) -> list[Receipt]:
        """Drop expired deliveries (reporting EXPIRED) and records past retention.

        Raises:
            StorageUnavailableError: nothing was changed.
        """
        ...

    async def message_receipts(self, app_id: int, sender_id: int, msg_id: int,
                               after: bytes = b"", limit: int = 100) -> MessageReceipts | None:
        """Where message `msg_id` of `sender_id` (a user of `app_id`) stands, or None when
        no such message is stored (never sent, or past retention).

        For a group message: each recipient's status in address order, `limit`
        of them (1..1000) with an address above `after`, and the aggregate counts
        (PROTOCOL.md §8.4).

        Raises:
            StorageError: `limit` out of range.
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def count_deliveries(self, limit: int) -> int:
        """Delivery rows waiting (one per message and recipient device), counted up to `limit`.

        For the operator's metrics: it never waits on, nor holds up, the
        connections that serve messages, and `limit` bounds its time.

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...


class DirectoryStore(Protocol):
    """Users, tokens, devices and groups."""

    async def authenticate(self, token_hash: bytes, device_id: bytes) -> Login | None:
        """The owner of a token and what is known of the device, or None.

        None means no such token exists.

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def register_device(self, user_id: int, device_id: bytes, now_ms: int,
                              stale_before_ms: int) -> DeviceRecord:
        """Record that a device connected.

        A new device gets every message accepted after it (the next commits'
        delivery rows) and takes over what waited for the devices it
        replaces: the user's placeholder (queued while the user had no
        device) and the devices not seen since `stale_before_ms`, which are
        forgotten.  Nothing is copied from the user's other devices
        (PROTOCOL.md §3.1).  The record says whether a device created here
        inherited any queued message (`DeviceRecord.inherited`; True when the
        device already existed).

        Raises:
            StorageUnavailableError: nothing was changed.
        """
        ...

    async def find_user(self, app_id: int, address: bytes) -> int | None:
        """The user id of `address` in the app, or None.

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def group_members(self, app_id: int, group_id: int) -> list[GroupMember] | None:
        """The members of a group of the app, or None when there is no such group.

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def group_roster(self, app_id: int, group_id: int) -> GroupRoster | None:
        """What routing needs of a group of the app (`storage.routing.group_recipients`):
        each member's user id and permissions; None when the app has no such group.

        One indexed read of the members, without their addresses: the relay
        of real-time group messages calls it once per message.

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def user_address(self, user_id: int) -> bytes | None:
        """The address of a user id, or None.

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...


class AdminStore(Protocol):
    """What the administrative service layer changes."""

    async def app_id(self, name: str) -> int:
        """The id of the app called `name`.

        Raises:
            NotFoundError: no such app.
        """
        ...

    async def create_app(self, name: str, now_ms: int) -> AppInfo:
        """Create an app (tenant).

        Raises:
            ConflictError: the name is taken.
        """
        ...

    async def list_apps(self) -> list[AppInfo]:
        """Every app, oldest first."""
        ...

    async def store_app_secret(self, app_id: int, secret_hash: bytes, now_ms: int,
                               replace: bool) -> None:
        """Keep the hash of a new app secret; `replace` revokes the app's others."""
        ...

    async def app_for_secret(self, secret_hash: bytes) -> AppInfo | None:
        """The app a secret (by its hash) belongs to, or None."""
        ...

    async def store_operator_key(self, key_hash: bytes, now_ms: int) -> None:
        """Keep the hash of the new operator key; the old one stops working."""
        ...

    async def is_operator_key(self, key_hash: bytes) -> bool:
        """Whether a key (by its hash) is the operator key."""
        ...

    async def rename_user(self, app_id: int, address: str, new_address: str) -> UserInfo:
        """Give a user a new address (its id, devices and queues stay).

        Raises:
            NotFoundError: no such user.
            ConflictError: the new address is taken.
        """
        ...

    async def create_user(self, app_id: int, address: str, now_ms: int) -> UserInfo:
        """Create a user.

        Raises:
            ConflictError: the address is taken in this app.
        """
        ...

    async def delete_user(self, app_id: int, address: str) -> None:
        """Delete a user with its tokens, devices, queues and memberships.

        Raises:
            NotFoundError: no such user.
        """
        ...

    async def list_users(self, app_id: int, after: str, limit: int) -> list[UserInfo]:
        """Users of an app ordered by address, starting after `after`."""
        ...

    async def store_token(self, user_id: int, token_hash: bytes, expires_ms: int,
                          now_ms: int) -> None:
        """Store the hash of a new access token.

        Raises:
            NotFoundError: no such user.
        """
        ...

    async def revoke_tokens(self, user_id: int) -> int:
        """Delete every token of a user; return how many there were."""
        ...

    async def create_group(self, app_id: int, name: str, now_ms: int,
                           flags: int = GroupFlag.DEFAULT,
                           members: Sequence[tuple[int, int]] = ()) -> GroupInfo:
        """Create a group with `GroupFlag` bits `flags` and its first members (user id,
        `Perm` bits); return it with its new numeric id.

        Raises:
            NotFoundError: a member is no user of the app (nothing is created).
            StorageError: flags out of range.
        """
        ...

    async def update_group(self, app_id: int, group_id: int, *, name: str | None = None,
                           flags: int | None = None) -> GroupInfo:
        """Rename a group and/or replace its `GroupFlag` bits (None: unchanged).

        Raises:
            NotFoundError: no such group in the app.
            StorageError: flags out of range.
        """
        ...

    async def change_members(self, app_id: int, group_id: int,
                             upserts: Sequence[tuple[int, int]],
                             removals: Sequence[int] = ()) -> GroupInfo:
        """Add members or set their permissions ((user id, `Perm` bits)) and remove
        members, in one transaction: all of it, or nothing.

        Raises:
            NotFoundError: no such group in the app, a user of `upserts` is no user
                of the app, or one of `removals` is no member.
        """
        ...

    async def delete_group(self, app_id: int, group_id: int) -> None:
        """Delete a group and its memberships.

        What was accepted for it before stays queued and is delivered (its
        members' delivery rows are theirs); reports of it still reach its senders.

        Raises:
            NotFoundError: no such group.
        """
        ...

    async def set_member(self, app_id: int, group_id: int, user_id: int, perms: int) -> None:
        """Add a member or change its permissions.

        Raises:
            NotFoundError: no such group.
        """
        ...

    async def remove_member(self, app_id: int, group_id: int, user_id: int) -> None:
        """Remove a member.

        Raises:
            NotFoundError: no such group or the user is not a member.
        """
        ...

    async def get_group(self, app_id: int, group_id: int) -> GroupInfo:
        """A group with its members.

        Raises:
            NotFoundError: no such group.
        """
        ...

    async def list_groups(self, app_id: int, after: int = 0, limit: int | None = None,
                          max_members: int | None = None) -> list[GroupInfo]:
        """An app's groups with their members in id order: `limit` (None: all) after `after`,
        ending early after the group whose members bring the total to `max_members`."""
        ...


class CredentialStore(Protocol):
    """What a running server reads to keep live sessions' credentials valid.

    Revocations, deletions, renames and app-secret replacements are logged
    in the transaction that makes them (whichever process makes them), so a
    server polling the log learns of them without a read per session.
    """

    async def latest_credential_change(self) -> int:
        """The version of the newest logged change (0 when none).

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def credential_changes(self, after: int, limit: int) -> list[CredentialChange]:
        """Up to `limit` logged changes with a version above `after`, oldest first.

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def token_owners(self, token_hashes: Sequence[bytes]) -> dict[bytes, Principal]:
        """The owner (app, user, address, expiry) of each token that still exists.

        A hash missing from the result names a revoked token or a deleted user.

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...





class Storage(MessageStore, DirectoryStore, AdminStore, CredentialStore, CertificateStore,
              FileStore, PresenceStore, Protocol):
    """Everything a backend provides, plus its lifecycle."""

    async def close(self) -> None:
        """Finish pending work and release the database."""
        ...

__all__ = ["AdminStore", "CertificateStore", "CredentialStore", "DirectoryStore", "FileStore",
           "MessageStore", "PresenceStore", "Storage"]
