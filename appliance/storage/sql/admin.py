"""Administrative changes: apps, users, tokens, groups and members.

Each function runs inside a transaction the writer thread opened; raising a
storage error rolls it back.  Uniqueness is checked before the insert, so
the error names what clashed; a race with another process that slips past
the check still ends as a `ConflictError` (the connection translates the
driver's integrity error).
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.errors import (
    ConflictError,
    GroupFullError,
    GroupNotFoundError,
    MemberNotFoundError,
    NotFoundError,
)
from appliance.protocol.wire.groups import MAX_GROUP_MEMBERS
from appliance.storage.models import AppInfo, GroupInfo, GroupMember, UserInfo
from appliance.storage.sql import file_access, presence
from appliance.storage.sql.credentials import record_change
from appliance.storage.sql.dialect import Connection


def app_id(conn: Connection, name: str) -> int:
    """See `AdminStore.app_id`."""
    row = conn.execute("SELECT id FROM apps WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFoundError(f"no app named {name!r}")
    return int(row[0])


def create_app(conn: Connection, name: str, now_ms: int) -> AppInfo:
    """See `AdminStore.create_app`."""
    if conn.execute("SELECT 1 FROM apps WHERE name = ?", (name,)).fetchone() is not None:
        raise ConflictError(f"app {name!r} already exists")
    cur = conn.execute("INSERT INTO apps (name, created_ms) VALUES (?, ?)", (name, now_ms))
    assert cur.lastrowid is not None
    return AppInfo(cur.lastrowid, name, now_ms)


def list_apps(conn: Connection) -> list[AppInfo]:
    """See `AdminStore.list_apps`."""
    return [AppInfo(*row) for row in
            conn.execute("SELECT id, name, created_ms FROM apps ORDER BY id")]


def store_app_secret(conn: Connection, app: int, secret_hash: bytes,
                     now_ms: int, replace: bool) -> None:
    """See `AdminStore.store_app_secret`."""
    if replace:
        conn.execute("DELETE FROM app_secrets WHERE app_id = ?", (app,))
        record_change(conn, app, None)  # running servers drop their cached secrets
    conn.execute("INSERT INTO app_secrets VALUES (?, ?, ?)", (secret_hash, app, now_ms))


def app_for_secret(conn: Connection, secret_hash: bytes) -> AppInfo | None:
    """See `AdminStore.app_for_secret`."""
    row = conn.execute("SELECT a.id, a.name, a.created_ms FROM app_secrets AS s"
                       " JOIN apps AS a ON a.id = s.app_id WHERE s.hash = ?",
                       (secret_hash,)).fetchone()
    return None if row is None else AppInfo(*row)


def store_operator_key(conn: Connection, key_hash: bytes, now_ms: int) -> None:
    """See `AdminStore.store_operator_key`."""
    conn.execute("DELETE FROM operator_keys")
    conn.execute("INSERT INTO operator_keys VALUES (?, ?)", (key_hash, now_ms))


def is_operator_key(conn: Connection, key_hash: bytes) -> bool:
    """See `AdminStore.is_operator_key`."""
    return conn.execute("SELECT 1 FROM operator_keys WHERE hash = ?",
                        (key_hash,)).fetchone() is not None


def rename_user(conn: Connection, app: int, address: str, new_address: str) -> UserInfo:
    """See `AdminStore.rename_user`."""
    user = _user(conn, app, address)
    if new_address != address:
        _check_free(conn, app, new_address)
    conn.execute("UPDATE users SET address = ? WHERE id = ?", (new_address.encode(), user))
    if new_address != address:
        record_change(conn, app, user)  # live sessions carry the old address
    created = conn.execute("SELECT created_ms FROM users WHERE id = ?", (user,)).fetchone()[0]
    return UserInfo(user, app, new_address, created)


def create_user(conn: Connection, app: int, address: str, now_ms: int) -> UserInfo:
    """See `AdminStore.create_user`."""
    _check_free(conn, app, address)
    cur = conn.execute("INSERT INTO users (app_id, address, created_ms) VALUES (?, ?, ?)",
                       (app, address.encode(), now_ms))
    assert cur.lastrowid is not None
    return UserInfo(cur.lastrowid, app, address, now_ms)


def _check_free(conn: Connection, app: int, address: str) -> None:
    if conn.execute("SELECT 1 FROM users WHERE app_id = ? AND address = ?",
                    (app, address.encode())).fetchone() is not None:
        raise ConflictError(f"user {address!r} already exists")


def _user(conn: Connection, app: int, address: str) -> int:
    row = conn.execute("SELECT id FROM users WHERE app_id = ? AND address = ?",
                       (app, address.encode())).fetchone()
    if row is None:
        raise NotFoundError(f"no user {address!r}")
    return int(row[0])


def delete_user(conn: Connection, app: int, address: str, now_ms: int) -> None:
    """See `AdminStore.delete_user`; its file grants and picture go too (`forget_user`)."""
    user = _user(conn, app, address)
    file_access.forget_user(conn, app, user, now_ms)
    presence.forget_user(conn, user)
    devices = conn.execute("SELECT id FROM devices WHERE user_id = ?", (user,)).fetchall()
    conn.executemany("DELETE FROM deliveries WHERE device_id = ?", devices)
    for table, column in (("devices", "user_id"), ("tokens", "user_id"), ("members", "user_id"),
                          ("receipts", "user_id"), ("users", "id")):
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (user,))
    record_change(conn, app, user)


def list_users(conn: Connection, app: int, after: str, limit: int) -> list[UserInfo]:
    """See `AdminStore.list_users`."""
    rows = conn.execute("SELECT id, address, created_ms FROM users WHERE app_id = ?"
                        " AND address > ? ORDER BY address LIMIT ?",
                        (app, after.encode(), limit))
    return [UserInfo(uid, app, bytes(addr).decode(errors="replace"), created)
            for uid, addr, created in rows]


def store_token(conn: Connection, user: int, token_hash: bytes, expires_ms: int,
                now_ms: int) -> None:
    """See `AdminStore.store_token`."""
    if conn.execute("SELECT 1 FROM users WHERE id = ?", (user,)).fetchone() is None:
        raise NotFoundError(f"no user with id {user}")
    conn.execute("INSERT INTO tokens VALUES (?, ?, ?, ?)", (token_hash, user, expires_ms, now_ms))


def revoke_tokens(conn: Connection, user: int) -> int:
    """See `AdminStore.revoke_tokens`."""
    count = conn.execute("DELETE FROM tokens WHERE user_id = ?", (user,)).rowcount
    row = conn.execute("SELECT app_id FROM users WHERE id = ?", (user,)).fetchone()
    if row is not None:
        record_change(conn, int(row[0]), user)
    return count


def create_group(conn: Connection, app: int, name: str, now_ms: int, flags: int,
                 members: Sequence[tuple[int, int]] = ()) -> GroupInfo:
    """See `AdminStore.create_group`."""
    _check_users(conn, app, [user for user, _ in members])
    cur = conn.execute("INSERT INTO groups (app_id, name, flags, created_ms) VALUES (?, ?, ?, ?)",
                       (app, name, flags, now_ms))
    assert cur.lastrowid is not None
    conn.executemany(conn.dialect.upsert_member,
                     [(cur.lastrowid, user, perms) for user, perms in members])
    _check_size(conn, cur.lastrowid)
    return get_group(conn, app, cur.lastrowid)


def _check_size(conn: Connection, group: int) -> None:
    """The group has at most `MAX_GROUP_MEMBERS` members, or the change is undone (the
    caller's transaction rolls back).  Checked after the change, in its transaction:
    two changes at once cannot both pass."""
    count = conn.execute("SELECT count(*) FROM members WHERE group_id = ?",
                         (group,)).fetchone()[0]
    if count > MAX_GROUP_MEMBERS:
        raise GroupFullError(f"a group has at most {MAX_GROUP_MEMBERS} members")


def _check_group(conn: Connection, app: int, group: int) -> str:
    row = conn.execute("SELECT name FROM groups WHERE id = ? AND app_id = ?",
                       (group, app)).fetchone()
    if row is None:
        raise GroupNotFoundError(f"no group {group}")
    return str(row[0])


def _check_users(conn: Connection, app: int, users: list[int]) -> None:
    """Every one of `users` is a user of `app` (nothing crosses apps)."""
    for start in range(0, len(users), 500):
        chunk = users[start:start + 500]
        marks = ",".join("?" * len(chunk))
        found = {r[0] for r in conn.execute(
            f"SELECT id FROM users WHERE app_id = ? AND id IN ({marks})", (app, *chunk))}
        missing = next((u for u in chunk if u not in found), None)
        if missing is not None:
            raise MemberNotFoundError(f"no user with id {missing} in this app")


def update_group(conn: Connection, app: int, group: int, name: str | None,
                 flags: int | None) -> GroupInfo:
    """See `AdminStore.update_group`."""
    _check_group(conn, app, group)
    if name is not None:
        conn.execute("UPDATE groups SET name = ? WHERE id = ?", (name, group))
    if flags is not None:
        conn.execute("UPDATE groups SET flags = ? WHERE id = ?", (flags, group))
    return get_group(conn, app, group)


def change_members(conn: Connection, app: int, group: int, upserts: Sequence[tuple[int, int]],
                   removals: Sequence[int]) -> GroupInfo:
    """See `AdminStore.change_members`: all of it, or (an error) none of it."""
    _check_group(conn, app, group)
    _check_users(conn, app, [user for user, _ in upserts])
    for user in removals:
        if conn.execute("DELETE FROM members WHERE group_id = ? AND user_id = ?",
                        (group, user)).rowcount == 0:
            raise MemberNotFoundError(f"user {user} is not a member of group {group}")
    conn.executemany(conn.dialect.upsert_member, [(group, user, perms) for user, perms in upserts])
    if upserts:
        _check_size(conn, group)
    return get_group(conn, app, group)


def delete_group(conn: Connection, app: int, group: int, now_ms: int) -> None:
    """See `AdminStore.delete_group`; the grants to it and its picture go too."""
    _check_group(conn, app, group)
    file_access.forget_group(conn, app, group, now_ms)
    conn.execute("DELETE FROM members WHERE group_id = ?", (group,))
    conn.execute("DELETE FROM groups WHERE id = ?", (group,))


def set_member(conn: Connection, app: int, group: int, user: int, perms: int) -> None:
    """See `AdminStore.set_member`."""
    _check_group(conn, app, group)
    conn.execute(conn.dialect.upsert_member, (group, user, perms))
    _check_size(conn, group)


def remove_member(conn: Connection, app: int, group: int, user: int) -> None:
    """See `AdminStore.remove_member`."""
    _check_group(conn, app, group)
    if conn.execute("DELETE FROM members WHERE group_id = ? AND user_id = ?",
                    (group, user)).rowcount == 0:
        raise MemberNotFoundError(f"user {user} is not a member of group {group}")


def get_group(conn: Connection, app: int, group: int) -> GroupInfo:
    """See `AdminStore.get_group`."""
    row = conn.execute("SELECT name, flags FROM groups WHERE id = ? AND app_id = ?",
                       (group, app)).fetchone()
    if row is None:
        raise GroupNotFoundError(f"no group {group}")
    rows = conn.execute("SELECT m.user_id, u.address, m.perms FROM members m JOIN users u"
                        " ON u.id = m.user_id WHERE m.group_id = ? ORDER BY u.address", (group,))
    members = tuple(GroupMember(uid, bytes(addr), perms) for uid, addr, perms in rows)
    return GroupInfo(group, app, str(row[0]), members, int(row[1]))


def list_groups(conn: Connection, app: int, after: int = 0, limit: int | None = None,
                max_members: int | None = None) -> list[GroupInfo]:
    """See `AdminStore.list_groups`."""
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM groups WHERE app_id = ? AND id > ? ORDER BY id LIMIT ?",
        (app, after, (1 << 62) if limit is None else limit))]
    groups: list[GroupInfo] = []
    members = 0
    for group_id in ids:
        if groups and max_members is not None and members >= max_members:
            break
        group = get_group(conn, app, group_id)
        groups.append(group)
        members += len(group.members)
    return groups
