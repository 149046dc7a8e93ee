"""Administrative changes: apps, users, tokens, groups and members.

Each function runs inside a transaction the writer thread opened; raising a
storage error rolls it back.
"""

from __future__ import annotations

import sqlite3

from appliance.errors import ConflictError, NotFoundError
from appliance.storage.models import AppInfo, GroupInfo, GroupMember, UserInfo


def app_id(conn: sqlite3.Connection, name: str) -> int:
    """See `AdminStore.app_id`."""
    row = conn.execute("SELECT id FROM apps WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFoundError(f"no app named {name!r}")
    return int(row[0])


def create_app(conn: sqlite3.Connection, name: str, now_ms: int) -> AppInfo:
    """See `AdminStore.create_app`."""
    try:
        cur = conn.execute("INSERT INTO apps (name, created_ms) VALUES (?, ?)", (name, now_ms))
    except sqlite3.IntegrityError:
        raise ConflictError(f"app {name!r} already exists") from None
    assert cur.lastrowid is not None
    return AppInfo(cur.lastrowid, name, now_ms)


def list_apps(conn: sqlite3.Connection) -> list[AppInfo]:
    """See `AdminStore.list_apps`."""
    return [AppInfo(*row) for row in
            conn.execute("SELECT id, name, created_ms FROM apps ORDER BY id")]


def store_app_secret(conn: sqlite3.Connection, app: int, secret_hash: bytes,
                     now_ms: int, replace: bool) -> None:
    """See `AdminStore.store_app_secret`."""
    if replace:
        conn.execute("DELETE FROM app_secrets WHERE app_id = ?", (app,))
    conn.execute("INSERT INTO app_secrets VALUES (?, ?, ?)", (secret_hash, app, now_ms))


def app_for_secret(conn: sqlite3.Connection, secret_hash: bytes) -> AppInfo | None:
    """See `AdminStore.app_for_secret`."""
    row = conn.execute("SELECT a.id, a.name, a.created_ms FROM app_secrets AS s"
                       " JOIN apps AS a ON a.id = s.app_id WHERE s.hash = ?",
                       (secret_hash,)).fetchone()
    return None if row is None else AppInfo(*row)


def store_operator_key(conn: sqlite3.Connection, key_hash: bytes, now_ms: int) -> None:
    """See `AdminStore.store_operator_key`."""
    conn.execute("DELETE FROM operator_keys")
    conn.execute("INSERT INTO operator_keys VALUES (?, ?)", (key_hash, now_ms))


def is_operator_key(conn: sqlite3.Connection, key_hash: bytes) -> bool:
    """See `AdminStore.is_operator_key`."""
    return conn.execute("SELECT 1 FROM operator_keys WHERE hash = ?",
                        (key_hash,)).fetchone() is not None


def rename_user(conn: sqlite3.Connection, app: int, address: str, new_address: str) -> UserInfo:
    """See `AdminStore.rename_user`."""
    user = _user(conn, app, address)
    try:
        conn.execute("UPDATE users SET address = ? WHERE id = ?", (new_address.encode(), user))
    except sqlite3.IntegrityError:
        raise ConflictError(f"user {new_address!r} already exists") from None
    created = conn.execute("SELECT created_ms FROM users WHERE id = ?", (user,)).fetchone()[0]
    return UserInfo(user, app, new_address, created)


def create_user(conn: sqlite3.Connection, app: int, address: str, now_ms: int) -> UserInfo:
    """See `AdminStore.create_user`."""
    try:
        cur = conn.execute("INSERT INTO users (app_id, address, created_ms) VALUES (?, ?, ?)",
                           (app, address.encode(), now_ms))
    except sqlite3.IntegrityError:
        raise ConflictError(f"user {address!r} already exists") from None
    assert cur.lastrowid is not None
    return UserInfo(cur.lastrowid, app, address, now_ms)


def _user(conn: sqlite3.Connection, app: int, address: str) -> int:
    row = conn.execute("SELECT id FROM users WHERE app_id = ? AND address = ?",
                       (app, address.encode())).fetchone()
    if row is None:
        raise NotFoundError(f"no user {address!r}")
    return int(row[0])


def delete_user(conn: sqlite3.Connection, app: int, address: str) -> None:
    """See `AdminStore.delete_user`."""
    user = _user(conn, app, address)
    devices = conn.execute("SELECT id FROM devices WHERE user_id = ?", (user,)).fetchall()
    conn.executemany("DELETE FROM deliveries WHERE device_id = ?", devices)
    for table, column in (("devices", "user_id"), ("tokens", "user_id"), ("members", "user_id"),
                          ("receipts", "user_id"), ("users", "id")):
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (user,))


def list_users(conn: sqlite3.Connection, app: int, after: str, limit: int) -> list[UserInfo]:
    """See `AdminStore.list_users`."""
    rows = conn.execute("SELECT id, address, created_ms FROM users WHERE app_id = ?"
                        " AND address > ? ORDER BY address LIMIT ?",
                        (app, after.encode(), limit))
    return [UserInfo(uid, app, bytes(addr).decode(errors="replace"), created)
            for uid, addr, created in rows]


def store_token(conn: sqlite3.Connection, user: int, token_hash: bytes, expires_ms: int,
                now_ms: int) -> None:
    """See `AdminStore.store_token`."""
    if conn.execute("SELECT 1 FROM users WHERE id = ?", (user,)).fetchone() is None:
        raise NotFoundError(f"no user with id {user}")
    conn.execute("INSERT INTO tokens VALUES (?, ?, ?, ?)", (token_hash, user, expires_ms, now_ms))


def revoke_tokens(conn: sqlite3.Connection, user: int) -> int:
    """See `AdminStore.revoke_tokens`."""
    return conn.execute("DELETE FROM tokens WHERE user_id = ?", (user,)).rowcount


def create_group(conn: sqlite3.Connection, app: int, name: str, now_ms: int) -> GroupInfo:
    """See `AdminStore.create_group`."""
    cur = conn.execute("INSERT INTO groups (app_id, name, created_ms) VALUES (?, ?, ?)",
                       (app, name, now_ms))
    assert cur.lastrowid is not None
    return GroupInfo(cur.lastrowid, app, name, ())


def _check_group(conn: sqlite3.Connection, app: int, group: int) -> str:
    row = conn.execute("SELECT name FROM groups WHERE id = ? AND app_id = ?",
                       (group, app)).fetchone()
    if row is None:
        raise NotFoundError(f"no group {group}")
    return str(row[0])


def delete_group(conn: sqlite3.Connection, app: int, group: int) -> None:
    """See `AdminStore.delete_group`."""
    _check_group(conn, app, group)
    conn.execute("DELETE FROM members WHERE group_id = ?", (group,))
    conn.execute("DELETE FROM groups WHERE id = ?", (group,))


def set_member(conn: sqlite3.Connection, app: int, group: int, user: int, perms: int) -> None:
    """See `AdminStore.set_member`."""
    _check_group(conn, app, group)
    conn.execute("INSERT INTO members VALUES (?, ?, ?) ON CONFLICT (group_id, user_id)"
                 " DO UPDATE SET perms = excluded.perms", (group, user, perms))


def remove_member(conn: sqlite3.Connection, app: int, group: int, user: int) -> None:
    """See `AdminStore.remove_member`."""
    _check_group(conn, app, group)
    if conn.execute("DELETE FROM members WHERE group_id = ? AND user_id = ?",
                    (group, user)).rowcount == 0:
        raise NotFoundError(f"user {user} is not a member of group {group}")


def get_group(conn: sqlite3.Connection, app: int, group: int) -> GroupInfo:
    """See `AdminStore.get_group`."""
    name = _check_group(conn, app, group)
    rows = conn.execute("SELECT m.user_id, u.address, m.perms FROM members m JOIN users u"
                        " ON u.id = m.user_id WHERE m.group_id = ? ORDER BY u.address", (group,))
    members = tuple(GroupMember(uid, bytes(addr), perms) for uid, addr, perms in rows)
    return GroupInfo(group, app, name, members)


def list_groups(conn: sqlite3.Connection, app: int) -> list[GroupInfo]:
    """See `AdminStore.list_groups`."""
    ids = [r[0] for r in conn.execute("SELECT id FROM groups WHERE app_id = ? ORDER BY id",
                                      (app,))]
    return [get_group(conn, app, g) for g in ids]
