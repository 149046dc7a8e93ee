"""Users, access tokens and groups: the one service layer admin callers use.

Tokens (SPEC M1, reliability.md §3.1): 160 random bits from `secrets`, with a
recognisable ``tdg_`` prefix so secret scanners find leaked ones; only their
SHA-256 is stored.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection
from typing import Final, Protocol

from appliance.credentials import token_hash
from appliance.engine.clock import Clock
from appliance.errors import NotFoundError, StorageError, UsageError

# The name rules live in appliance.names (the engine checks names too); kept importable here.
from appliance.names import (
    APP_SENDER as APP_SENDER,
    MAX_GROUP_NAME_BYTES as MAX_GROUP_NAME_BYTES,
    RESERVED_PREFIX as RESERVED_PREFIX,
    check_address as check_address,
    check_group_name as check_group_name,
)
from appliance.protocol.wire.groups import PERM_NAMES
from appliance.storage.interface import Storage
from appliance.storage.models import (
    AppInfo,
    GroupFlag,
    GroupInfo,
    IssuedToken,
    Privacy,
    UserInfo,
)

TOKEN_PREFIX = "tdg_"
APP_SECRET_PREFIX = "tds_"
OPERATOR_KEY_PREFIX = "tdo_"
DEFAULT_APP = "default"
_PERM_NAMES = PERM_NAMES
log = logging.getLogger(__name__)


class CredentialsListener(Protocol):
    """Live sessions of this process (`appliance.engine.credentials.CredentialWatcher`)."""

    async def users_changed(self, user_ids: Collection[int]) -> int:
        """Re-check the live sessions of these users now; return how many closed."""
        ...


#: The longest access-token lifetime: about 100 years.  Its expiry, in ms, must fit
#: a signed 64-bit column (issue 12: ttl_s 2**62 overflowed the store).
MAX_TOKEN_TTL_S: Final = 100 * 365 * 86400


def check_token_ttl(ttl_s: int) -> int:
    """An access token's lifetime in seconds: 1..`MAX_TOKEN_TTL_S`.

    Raises:
        UsageError: anything else.
    """
    if not 1 <= ttl_s <= MAX_TOKEN_TTL_S:
        raise UsageError(f"token lifetime must be 1..{MAX_TOKEN_TTL_S} seconds, got {ttl_s}")
    return ttl_s


def parse_perms(text: str) -> int:
    """Turn "send,receive" into permission bits.

    Raises:
        UsageError: an unknown permission name.
    """
    bits = 0
    for name in filter(None, (p.strip() for p in text.split(","))):
        if name not in _PERM_NAMES:
            raise UsageError(f"unknown permission {name!r}; use send, receive, admin")
        bits |= _PERM_NAMES[name]
    return bits


def perm_names(bits: int) -> str:
    """The inverse of `parse_perms`."""
    return ",".join(n for n, b in _PERM_NAMES.items() if bits & b) or "-"


def check_app_name(name: str) -> str:
    """Validate an app name: 1-64 characters of letters, digits, '-', '_' and '.'.

    Raises:
        UsageError: anything else.
    """
    if not 1 <= len(name) <= 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise UsageError("app name must be 1-64 letters, digits, '-', '_' or '.'")
    return name


async def app_for_secret(store: Storage, secret: str) -> AppInfo | None:
    """The app an app secret belongs to (the REST API's Bearer credential), or None."""
    if not secret.startswith(APP_SECRET_PREFIX):
        return None
    return await store.app_for_secret(token_hash(secret.encode()))


async def issue_operator_key(store: Storage, clock: Clock) -> str:
    """A new operator key (shown once); the previous one stops working."""
    key = OPERATOR_KEY_PREFIX + secrets.token_urlsafe(24)
    await store.store_operator_key(token_hash(key.encode()), clock.wall_ms())
    return key


async def is_operator_key(store: Storage, key: str) -> bool:
    """Whether `key` is the current operator key."""
    return key.startswith(OPERATOR_KEY_PREFIX) and await store.is_operator_key(
        token_hash(key.encode()))


class AdminService:
    """Administrative operations on one app."""

    def __init__(self, store: Storage, clock: Clock, app: str = DEFAULT_APP,
                 listener: CredentialsListener | None = None) -> None:
        self.store = store
        self.clock = clock
        self.app = app
        #: Told of revocations, deletions and renames made here, so that this
        #: process's sessions close before the call returns.  Other processes
        #: (and this one, as a fallback) learn of them from the store's log.
        self.listener = listener

    async def _credentials_changed(self, user: int) -> None:
        if self.listener is None:
            return
        try:
            await self.listener.users_changed((user,))
        except StorageError as exc:  # committed anyway: the log's next poll closes them
            log.warning("live sessions of user %d not re-checked yet: %s", user, exc)

    async def _app(self) -> int:
        return await self.store.app_id(self.app)

    async def add_app(self, name: str) -> tuple[AppInfo, str]:
        """Create an app and its first secret (shown once).

        Raises:
            UsageError: a bad name.
            ConflictError: the name is taken.
        """
        app = await self.store.create_app(check_app_name(name), self.clock.wall_ms())
        secret = await AdminService(self.store, self.clock, app.name).issue_app_secret(
            replace=True)
        return app, secret

    async def list_apps(self) -> list[AppInfo]:
        """Every app."""
        return await self.store.list_apps()

    async def issue_app_secret(self, *, replace: bool) -> str:
        """A new secret for this app (shown once); `replace` revokes the old ones.

        Raises:
            NotFoundError: no such app.
        """
        secret = APP_SECRET_PREFIX + secrets.token_urlsafe(24)
        await self.store.store_app_secret(await self._app(), token_hash(secret.encode()),
                                          self.clock.wall_ms(), replace)
        return secret

    async def _user_id(self, app_id: int, address: str) -> int:
        user = await self.store.find_user(app_id, check_address(address).encode())
        if user is None:
            raise NotFoundError(f"no user {address!r}")
        return user

    async def add_user(self, address: str) -> UserInfo:
        """Create a user.

        Raises:
            UsageError: bad address.
            ConflictError: the address exists.
        """
        return await self.store.create_user(await self._app(), check_address(address),
                                            self.clock.wall_ms())

    async def delete_user(self, address: str) -> None:
        """Delete a user and everything queued for it.

        Raises:
            NotFoundError: no such user.
        """
        app_id = await self._app()
        user = await self._user_id(app_id, address)
        await self.store.delete_user(app_id, check_address(address))
        await self._credentials_changed(user)

    async def rename_user(self, address: str, new_address: str) -> UserInfo:
        """Give a user a new address.

        Raises:
            UsageError: a bad address.
            NotFoundError: no such user.
            ConflictError: the new address is taken.
        """
        info = await self.store.rename_user(await self._app(), check_address(address),
                                            check_address(new_address))
        if new_address != address:
            await self._credentials_changed(info.user_id)
        return info

    async def list_users(self, after: str = "", limit: int = 100) -> list[UserInfo]:
        """Users in address order, `limit` at a time after `after`."""
        return await self.store.list_users(await self._app(), after, limit)

    async def issue_token(self, address: str, ttl_s: int) -> IssuedToken:
        """Issue an access token valid for `ttl_s` seconds.

        Raises:
            UsageError: a lifetime outside 1..MAX_TOKEN_TTL_S.
            NotFoundError: no such user.
        """
        check_token_ttl(ttl_s)
        user = await self._user_id(await self._app(), address)
        token = TOKEN_PREFIX + secrets.token_urlsafe(20)
        now = self.clock.wall_ms()
        expires = now + ttl_s * 1000
        await self.store.store_token(user, token_hash(token.encode()), expires, now)
        return IssuedToken(token, user, expires)

    async def revoke_tokens(self, address: str) -> int:
        """Revoke every token of a user; return how many.

        Raises:
            NotFoundError: no such user.
        """
        user = await self._user_id(await self._app(), address)
        count = await self.store.revoke_tokens(user)
        await self._credentials_changed(user)
        return count

    # --- presence settings (SPEC M6; what an app sets over REST) ----------------------

    async def privacy(self, address: str, value: Privacy | None = None) -> Privacy:
        """The user's presence privacy, first set to `value` when given.

        A running server applies a change within a second (the store's log).

        Raises:
            NotFoundError: no such user.
        """
        app_id = await self._app()
        user = await self._user_id(app_id, address)
        if value is None:
            return await self.store.privacy(app_id, user)
        await self.store.set_privacy(app_id, user, value)
        await self._credentials_changed(user)
        return value

    async def set_block(self, address: str, other: str, blocked: bool) -> bool:
        """`address` blocks (or with False, unblocks) `other`; whether anything changed.

        Raises:
            UsageError: a user blocking itself, or a bad address.
            NotFoundError: either user does not exist.
            ConflictError: the user already blocks the most users it may.
        """
        if check_address(other) == check_address(address):
            raise UsageError("a user cannot block itself")
        app_id = await self._app()
        user = await self._user_id(app_id, address)
        changed = await self.store.set_block(app_id, user, other.encode(), blocked,
                                             self.clock.wall_ms())
        if changed:
            await self._credentials_changed(user)
        return changed

    async def blocks(self, address: str) -> list[str]:
        """The addresses the user blocks, in address order.

        Raises:
            NotFoundError: no such user.
        """
        app_id = await self._app()
        user = await self._user_id(app_id, address)
        return [a.decode(errors="replace") for a in await self.store.blocks(app_id, user)]

    async def add_group(self, name: str, members: list[str], perms: int) -> GroupInfo:
        """Create a group with initial members, in one transaction.

        Not announced to its members: the CLI runs no engine (the REST API's
        changes are, `appliance.engine.groups`).

        Raises:
            UsageError: a bad name or member address.
            NotFoundError: a member does not exist.
        """
        name = check_group_name(name)
        app_id = await self._app()
        ids = [await self._user_id(app_id, m) for m in members]
        return await self.store.create_group(app_id, name, self.clock.wall_ms(),
                                             GroupFlag.DEFAULT, [(user, perms) for user in ids])

    async def delete_group(self, group_id: int) -> None:
        """Delete a group.

        Raises:
            NotFoundError: no such group.
        """
        await self.store.delete_group(await self._app(), group_id)

    async def set_members(self, group_id: int, add: list[str], remove: list[str],
                          perms: int) -> GroupInfo:
        """Add (or re-permission) and remove members, all or nothing (not announced:
        see `add_group`).

        Raises:
            NotFoundError: no such group, user, or membership.
        """
        app_id = await self._app()
        upserts = [(await self._user_id(app_id, address), perms) for address in add]
        removals = [await self._user_id(app_id, address) for address in remove]
        return await self.store.change_members(app_id, group_id, upserts, removals)

    async def get_group(self, group_id: int) -> GroupInfo:
        """A group with its members.

        Raises:
            NotFoundError: no such group.
        """
        return await self.store.get_group(await self._app(), group_id)

    async def list_groups(self, after: int = 0, limit: int | None = None,
                          max_members: int | None = None) -> list[GroupInfo]:
        """The app's groups in id order, `limit` at a time after id `after` (all: None),
        ending early after the group whose members bring the total to `max_members`."""
        return await self.store.list_groups(await self._app(), after, limit, max_members)
