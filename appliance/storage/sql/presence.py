"""Presence and blocks in SQL (issue 16, SPEC M6): last-seen times, privacy, contacts, blocks.

Reads run on reader threads; changes run on the writer thread in a
transaction of their own and are logged in ``credential_changes`` under the
changed user (the user whose privacy or contacts changed, or who blocks), so
that every server process re-checks what that user shows to whom within
``limits.credentials_poll_s`` (`appliance.engine.credentials`).  Whether a
viewer may see a user is `appliance.storage.routing.presence_visible`.

Nothing crosses apps: contacts and blocks are set by address within the
user's own app, and `presence_of` resolves addresses in the viewer's app.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from appliance.errors import ConflictError, NotFoundError, StorageError
from appliance.storage.models import MAX_BLOCKS, MAX_CONTACTS, PresenceRecord, Privacy
from appliance.storage.routing import presence_visible
from appliance.storage.sql.bulk import CHUNK, marks as in_list
from appliance.storage.sql.credentials import record_change
from appliance.storage.sql.dialect import Connection


def _chunks(values: Sequence[object]) -> list[Sequence[object]]:
    """`values` in IN lists of at most `CHUNK` (below SQLite's and MariaDB's limits)."""
    return [values[i:i + CHUNK] for i in range(0, len(values), CHUNK)]


def _marks(values: Sequence[object]) -> str:
    return in_list(len(values))


def _user_of_app(conn: Connection, app: int, user: int) -> None:
    if conn.execute("SELECT 1 FROM users WHERE id = ? AND app_id = ?",
                    (user, app)).fetchone() is None:
        raise NotFoundError(f"no user with id {user} in this app")


def _user_at(conn: Connection, app: int, address: bytes) -> int:
    row = conn.execute("SELECT id FROM users WHERE app_id = ? AND address = ?",
                       (app, address)).fetchone()
    if row is None:
        raise NotFoundError(f"no user {address.decode('utf-8', 'replace')!r}")
    return int(row[0])


# --- reads --------------------------------------------------------------------------------


def presence_of(conn: Connection, app: int, viewer: int | None,
                addresses: Sequence[bytes]) -> list[PresenceRecord | None]:
    """See `PresenceStore.presence_of`."""
    found: dict[bytes, tuple[int, int, int]] = {}
    for chunk in _chunks(addresses):
        for uid, address, last_seen, privacy in conn.execute(
                "SELECT id, address, last_seen_ms, presence_privacy FROM users"
                f" WHERE app_id = ? AND address IN ({_marks(chunk)})", (app, *chunk)):
            found[bytes(address)] = (int(uid), int(last_seen), int(privacy))
    ids = [uid for uid, _, _ in found.values()]
    contact: set[int] = set()
    blocking: set[int] = set()
    if viewer is not None and ids:
        for chunk in _chunks(ids):
            marks = _marks(chunk)
            contact.update(r[0] for r in conn.execute(
                f"SELECT user_id FROM contacts WHERE contact_id = ? AND user_id IN ({marks})",
                (viewer, *chunk)))
            blocking.update(r[0] for r in conn.execute(
                f"SELECT user_id FROM blocks WHERE blocked_id = ? AND user_id IN ({marks})",
                (viewer, *chunk)))
    out: list[PresenceRecord | None] = []
    for address in addresses:
        row = found.get(address)
        if row is None:
            out.append(None)
            continue
        uid, last_seen, privacy = row
        visible = viewer is None or presence_visible(
            privacy, own=uid == viewer, contact=uid in contact, blocks_viewer=uid in blocking)
        out.append(PresenceRecord(uid, address, last_seen, visible))
    return out


def presence_viewers(conn: Connection, user: int, viewers: Collection[int]) -> set[int]:
    """See `PresenceStore.presence_viewers`."""
    row = conn.execute("SELECT presence_privacy FROM users WHERE id = ?", (user,)).fetchone()
    if row is None or not viewers:
        return set()
    privacy = int(row[0])
    listed = list(viewers)
    contact: set[int] = set()
    blocked: set[int] = set()
    for chunk in _chunks(listed):
        marks = _marks(chunk)
        if privacy == Privacy.CONTACTS:
            contact.update(r[0] for r in conn.execute(
                f"SELECT contact_id FROM contacts WHERE user_id = ? AND contact_id IN ({marks})",
                (user, *chunk)))
        blocked.update(r[0] for r in conn.execute(
            f"SELECT blocked_id FROM blocks WHERE user_id = ? AND blocked_id IN ({marks})",
            (user, *chunk)))
    return {v for v in listed if presence_visible(privacy, own=v == user,
                                                  contact=v in contact,
                                                  blocks_viewer=v in blocked)}


def blocks_of(conn: Connection, users: Sequence[int]) -> dict[int, frozenset[int]]:
    """See `PresenceStore.blocks_of`."""
    found: dict[int, set[int]] = {}
    for chunk in _chunks(users):
        for user, blocked in conn.execute(
                f"SELECT user_id, blocked_id FROM blocks WHERE user_id IN ({_marks(chunk)})",
                tuple(chunk)):
            found.setdefault(int(user), set()).add(int(blocked))
    return {u: frozenset(found.get(u, ())) for u in users}


def list_blocks(conn: Connection, app: int, user: int) -> list[bytes]:
    """See `PresenceStore.blocks`."""
    _user_of_app(conn, app, user)
    return [bytes(r[0]) for r in conn.execute(
        "SELECT u.address FROM blocks b JOIN users u ON u.id = b.blocked_id"
        " WHERE b.user_id = ? ORDER BY u.address", (user,))]


def list_contacts(conn: Connection, app: int, user: int) -> list[bytes]:
    """See `PresenceStore.contacts`."""
    _user_of_app(conn, app, user)
    return [bytes(r[0]) for r in conn.execute(
        "SELECT u.address FROM contacts c JOIN users u ON u.id = c.contact_id"
        " WHERE c.user_id = ? ORDER BY u.address", (user,))]


def privacy(conn: Connection, app: int, user: int) -> Privacy:
    """See `PresenceStore.privacy`."""
    row = conn.execute("SELECT presence_privacy FROM users WHERE id = ? AND app_id = ?",
                       (user, app)).fetchone()
    if row is None:
        raise NotFoundError(f"no user with id {user} in this app")
    return Privacy(int(row[0]))


# --- changes (the writer thread, each in a transaction of its own) --------------------------


def set_block(conn: Connection, app: int, user: int, address: bytes, blocked: bool,
              now_ms: int) -> bool:
    """See `PresenceStore.set_block`."""
    _user_of_app(conn, app, user)
    other = _user_at(conn, app, address)
    if other == user:
        raise StorageError("a user cannot block itself")
    if blocked:
        if conn.execute("SELECT 1 FROM blocks WHERE user_id = ? AND blocked_id = ?",
                        (user, other)).fetchone() is not None:
            return False
        count = conn.execute("SELECT count(*) FROM blocks WHERE user_id = ?",
                             (user,)).fetchone()[0]
        if count >= MAX_BLOCKS:
            raise ConflictError(f"a user blocks at most {MAX_BLOCKS} users")
        conn.execute("INSERT INTO blocks (user_id, blocked_id, created_ms) VALUES (?, ?, ?)",
                     (user, other, now_ms))
    elif not conn.execute("DELETE FROM blocks WHERE user_id = ? AND blocked_id = ?",
                          (user, other)).rowcount:
        return False
    record_change(conn, app, user)
    return True


def set_privacy(conn: Connection, app: int, user: int, value: int) -> None:
    """See `PresenceStore.set_privacy`."""
    if value not in Privacy.__members__.values():
        raise StorageError(f"unknown presence privacy {value}")
    _user_of_app(conn, app, user)
    conn.execute("UPDATE users SET presence_privacy = ? WHERE id = ?", (value, user))
    record_change(conn, app, user)


def set_contacts(conn: Connection, app: int, user: int, addresses: Sequence[bytes]
                 ) -> list[bytes]:
    """See `PresenceStore.set_contacts`."""
    if len(addresses) > MAX_CONTACTS:
        raise StorageError(f"a user has at most {MAX_CONTACTS} contacts")
    _user_of_app(conn, app, user)
    ids: dict[bytes, int] = {}
    for chunk in _chunks(list(dict.fromkeys(addresses))):
        for uid, address in conn.execute(
                f"SELECT id, address FROM users WHERE app_id = ? AND address IN ({_marks(chunk)})",
                (app, *chunk)):
            ids[bytes(address)] = int(uid)
    conn.execute("DELETE FROM contacts WHERE user_id = ?", (user,))
    conn.executemany("INSERT INTO contacts (user_id, contact_id) VALUES (?, ?)",
                     [(user, uid) for uid in sorted(set(ids.values()) - {user})])
    record_change(conn, app, user)
    return [a for a in dict.fromkeys(addresses) if a not in ids]


def forget_user(conn: Connection, user: int) -> None:
    """A user is being deleted: its contacts and blocks go, both ways."""
    for table, column in (("contacts", "user_id"), ("contacts", "contact_id"),
                          ("blocks", "user_id"), ("blocks", "blocked_id")):
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (user,))


def stamp_last_seen(conn: Connection, last_seen: dict[int, int]) -> None:
    """Users' last-seen times (to the minute), in the group commit's transaction."""
    conn.executemany("UPDATE users SET last_seen_ms = ? WHERE id = ?",
                     [(ms, user) for user, ms in last_seen.items()])
