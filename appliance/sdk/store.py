"""The device's local store: outbox, history, statuses, duplicate suppression (SPEC M7, M17).

SQLite in WAL mode.  Calls run on the event loop thread: each is a few
indexed statements, and the client batches a loop turn's worth of work into
one transaction, so a commit costs well under a millisecond; a thread hop per
commit would cost more than it saves.  ``synchronous=NORMAL`` (the default)
survives the app crashing or being killed; ``FULL`` also survives a power
cut, at one fsync per commit.

Message ids are unsigned 64-bit on the wire and signed in SQLite (values
from 2**63 stored minus 2**64); id 0 is stored as NULL, so it never collides
in the (sender, id) key.  The sender of our own messages is stored as ``b""``
(our address is not known before the first WELCOME).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from appliance.errors import StorageError
from appliance.protocol.wire import STORED_U64_MAX, Flag, Message, Status
from appliance.protocol.wire.ids import LOWEST_DB_ID, from_db_id, to_db_id
from appliance.sdk.models import OutgoingMessage, StoredMessage, moves_forward

_SCHEMA_VERSION = 1
_RETRIED = (Status.OUTBOX, Status.FAILED, Status.RATE_LIMITED)
NEW, READ_UNREPORTED, READ_REPORTED = 0, 1, 2

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
  rowid INTEGER PRIMARY KEY,
  outgoing INTEGER NOT NULL,
  sender BLOB NOT NULL,
  peer BLOB NOT NULL,
  group_id INTEGER NOT NULL,
  msg_id INTEGER,
  refid INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  ts_ms INTEGER NOT NULL,
  expiry_s INTEGER NOT NULL,
  type INTEGER NOT NULL,
  flags INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  read INTEGER NOT NULL,
  payload BLOB NOT NULL,
  UNIQUE (sender, msg_id)
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (group_id, peer, rowid);
-- The status of each of our own messages (id != 0), in a narrow table: a
-- report rewrites 3 integers instead of a message row (a third of the cost).
CREATE TABLE IF NOT EXISTS own_status (
  msg_id INTEGER PRIMARY KEY,
  status INTEGER NOT NULL,
  ts_ms INTEGER NOT NULL
);
-- Own messages waiting for the server's first answer (a table of its own: a
-- partial index on status made every report five times dearer).
CREATE TABLE IF NOT EXISTS outbox (msg_id INTEGER PRIMARY KEY);
CREATE INDEX IF NOT EXISTS messages_unreported ON messages (rowid) WHERE read = {READ_UNREPORTED};
CREATE UNIQUE INDEX IF NOT EXISTS messages_seq ON messages (seq)
  WHERE msg_id IS NULL AND seq != 0;
PRAGMA user_version = {_SCHEMA_VERSION};
"""

_COLUMNS = ("m.msg_id, m.outgoing, m.sender, m.peer, m.group_id, m.refid,"
            " CASE WHEN s.ts_ms > 0 THEN s.ts_ms WHEN m.ts_ms > 0 THEN m.ts_ms"
            " ELSE m.created_ms END,"
            " m.type, m.flags, m.priority, coalesce(s.status, 0),"
            " m.read, m.payload")


_IN_CHUNK = 500
_CACHE_MAX = 100_000
_INSERT_INCOMING = (
    "INSERT OR IGNORE INTO messages (outgoing, sender, peer, group_id, msg_id, refid, seq,"
    " created_ms, ts_ms, expiry_s, type, flags, priority, read, payload)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def queued(m: OutgoingMessage) -> bool:
    """Whether `m` waits in the outbox until answered (PROTOCOL.md §6 rule 1).

    Real-time messages (expiry 0 or TRANSIENT) and id 0 ("no status") are sent
    once, if the client is online: they are neither stored by the server nor
    deduplicated, so resending them could deliver them twice.
    """
    return bool(m.id) and m.expiry_s > 0 and not m.flags & Flag.TRANSIENT


def _incoming_row(m: Message, now_ms: int) -> tuple[Any, ...]:
    if m.flags & Flag.OUTGOING_COPY:  # what another device of ours sent
        outgoing, sender, peer, read = 1, b"", m.peer, READ_REPORTED
    else:
        outgoing, sender, read = 0, m.peer, NEW
        peer = b"" if m.group_id else m.peer
    return (outgoing, sender, peer, m.group_id, to_db_id(m.id), to_db_id(m.refid) or 0, m.seq,
            now_ms, m.timestamp_ms, m.expiry_s, m.type, m.flags, m.priority, read, m.payload)


class LocalStore:
    """One device's SQLite database.

    Raises `StorageError` (never a sqlite3 exception) when the file cannot be
    used.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the local store {path}: {exc}") from None
        try:
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA cache_size = -16384")  # 16 MiB
            self.conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise StorageError(f"{path}: local store version {version} is newer than this"
                                   " SDK; upgrade the SDK")
            self.conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            self.conn.close()
            raise StorageError(f"cannot open the local store {path}: {exc}") from None
        except StorageError:
            self.conn.close()
            raise
        self.path = path
        # Caches of what this connection alone writes (one client per store
        # file), to save a lookup per status report and per received message:
        # our own messages' statuses, and the highest id stored per sender.
        self._status: dict[int | None, int] = {}
        self._highest: dict[bytes, int] = {}

    def close(self) -> None:
        self.conn.close()

    # --- identity ------------------------------------------------------------

    def meta(self, key: str) -> bytes | None:
        row = self._run("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        self._run("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
                  " SET value = excluded.value", (key, value))

    def device_id(self) -> bytes:
        """This installation's device id, created once and kept (PROTOCOL.md §3.1)."""
        device = self.meta("device_id")
        if device is None:
            device = os.urandom(16).hex().encode()
            self.set_meta("device_id", device)
        return device

    def highest_own_id(self) -> int:
        """The highest id this user's messages stored here have (0 when none)."""
        row = self._run("SELECT max(msg_id) FROM messages WHERE sender = x''"
                        " AND msg_id >= 0").fetchone()
        return int(row[0] or 0)

    # --- the per-turn transaction --------------------------------------------

    def commit(self, outgoing: list[OutgoingMessage], incoming: list[Message],
               statuses: list[tuple[int, int, int]], now_ms: int
               ) -> tuple[list[bool], list[bool]]:
        """Store new outgoing messages, received messages and status changes at once.

        `statuses` holds (id, status, timestamp) of our own messages.  Returns
        whether each status moved the stored one forward, and whether each
        incoming message was new (False: a duplicate by (sender, id), to be
        acknowledged again and dropped).  Rows are written with executemany
        and looked up with one query per kind: a statement per row would cost
        the client several times more per message.
        """
        conn = self.conn
        try:
            conn.execute("BEGIN")
            if outgoing:
                conn.executemany(
                    "INSERT OR IGNORE INTO messages (outgoing, sender, peer, group_id, msg_id,"
                    " refid, seq, created_ms, ts_ms, expiry_s, type, flags, priority, read,"
                    " payload) VALUES (1, x'', ?, ?, ?, ?, 0, ?, 0, ?, ?, ?, ?, 2, ?)",
                    [(m.peer.encode(), m.group_id, to_db_id(m.id), to_db_id(m.refid) or 0,
                      now_ms, m.expiry_s, m.type, m.flags, m.priority, m.payload)
                     for m in outgoing])
                conn.executemany("INSERT OR IGNORE INTO own_status VALUES (?, ?, 0)",
                                 [(to_db_id(m.id), m.status) for m in outgoing if m.id])
                conn.executemany("INSERT OR IGNORE INTO outbox VALUES (?)",
                                 [(to_db_id(m.id),) for m in outgoing if queued(m)])
                cache = self._status
                for m in outgoing:
                    if m.id:
                        cache.setdefault(to_db_id(m.id), m.status)
            changed = self._apply_statuses(statuses) if statuses else []
            fresh = self._store_incoming(incoming, now_ms) if incoming else []
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._status.clear()
            self._highest.clear()
            raise StorageError(f"local store: {exc}") from None
        if len(self._status) > _CACHE_MAX:
            self._status.clear()
        return changed, fresh

    def _apply_statuses(self, statuses: list[tuple[int, int, int]]) -> list[bool]:
        current = self._own_statuses([to_db_id(i) for i, _, _ in statuses])
        changed: list[bool] = []
        updates: list[tuple[int, int | None, int | None]] = []
        answered: list[tuple[int | None]] = []
        for msg_id, status, ts in statuses:
            key = to_db_id(msg_id)
            was = current.get(key)
            if was is None or not moves_forward(was, status):
                changed.append(False)
                continue
            current[key] = status
            changed.append(True)
            updates.append((status, ts if status == Status.SENT else None, key))
            if status not in _RETRIED:
                answered.append((key,))
        self.conn.executemany("UPDATE own_status SET status = ?, ts_ms = coalesce(?, ts_ms)"
                              " WHERE msg_id = ?", updates)
        self.conn.executemany("DELETE FROM outbox WHERE msg_id = ?", answered)
        return changed

    def _own_statuses(self, keys: list[int | None]) -> dict[int | None, int]:
        found = self._status
        unique = list(dict.fromkeys(k for k in keys if k is not None and k not in found))
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start:start + _IN_CHUNK]
            found.update(self.conn.execute(
                f"SELECT msg_id, status FROM own_status WHERE msg_id IN"
                f" ({','.join('?' * len(chunk))})", chunk).fetchall())
        return found

    def _store_incoming(self, incoming: list[Message], now_ms: int) -> list[bool]:
        rows = [_incoming_row(m, now_ms) for m in incoming]
        by_sender: dict[bytes, list[int]] = {}
        for row in rows:
            if row[4] is not None:
                by_sender.setdefault(row[1], []).append(row[4])
        seen: set[tuple[bytes, int | None]] = set()
        for sender, all_ids in by_sender.items():
            # Ids above the highest stored for this sender are new: no lookup.
            high = self._highest_id(sender)
            ids = [i for i in all_ids if i <= high]
            self._highest[sender] = max(high, *all_ids)
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start:start + _IN_CHUNK]
                seen.update((sender, i) for (i,) in self.conn.execute(
                    f"SELECT msg_id FROM messages WHERE sender = ? AND msg_id IN"
                    f" ({','.join('?' * len(chunk))})", [sender, *chunk]))
        fresh: list[bool] = []
        new_rows = []
        for row in rows:
            if row[4] is None:  # id 0: deduplicated by seq, row by row (rare)
                fresh.append(self.conn.execute(_INSERT_INCOMING, row).rowcount > 0)
                continue
            key = (row[1], row[4])
            if key in seen:
                fresh.append(False)
                continue
            seen.add(key)
            fresh.append(True)
            new_rows.append(row)
        self.conn.executemany(_INSERT_INCOMING, new_rows)
        copies = [(row[4], row[8]) for row in new_rows if row[0] and row[4] is not None]
        if copies:  # what another device of ours sent: stored by the server
            self.conn.executemany(f"INSERT OR IGNORE INTO own_status VALUES"
                                  f" (?, {int(Status.SENT)}, ?)", copies)
        return fresh

    def _highest_id(self, sender: bytes) -> int:
        high = self._highest.get(sender)
        if high is None:
            row = self.conn.execute("SELECT max(msg_id) FROM messages WHERE sender = ?",
                                    (sender,)).fetchone()
            high = self._highest[sender] = LOWEST_DB_ID if row[0] is None else row[0]
        return high

    # --- reads -----------------------------------------------------------------

    def outbox(self, now_ms: int) -> tuple[list[OutgoingMessage], list[int]]:
        """Messages to (re)send, oldest first, and the ids of those that expired waiting.

        Real-time messages and those with id 0 never wait in the outbox: they
        are sent once, if the client is online.
        """
        send: list[OutgoingMessage] = []
        expired: list[int] = []
        rows = self._run(
            "SELECT m.msg_id, m.peer, m.group_id, m.refid, m.created_ms, m.expiry_s, m.type,"
            " m.flags, m.priority, s.status, m.payload FROM outbox AS o"
            " JOIN messages AS m ON m.sender = x'' AND m.msg_id = o.msg_id"
            " JOIN own_status AS s ON s.msg_id = o.msg_id ORDER BY m.rowid").fetchall()
        for (db_id, peer, group_id, refid, created, expiry_s, type_, flags, priority, status,
             payload) in rows:
            msg_id = from_db_id(db_id)
            if created + expiry_s * 1000 <= now_ms:
                expired.append(msg_id)
                continue
            send.append(OutgoingMessage(id=msg_id, peer=bytes(peer).decode(),
                                        group_id=group_id, payload=bytes(payload),
                                        refid=from_db_id(refid), expiry_s=expiry_s,
                                        type=type_, flags=flags, priority=priority,
                                        status=status))
        return send, expired

    def history(self, peer: bytes, group_id: int, limit: int, before: int | None
                ) -> list[tuple[int, StoredMessage]]:
        """(cursor, message) of a conversation, newest first, older than `before`."""
        rows = self._run(
            f"SELECT m.rowid, {_COLUMNS} FROM messages AS m LEFT JOIN own_status AS s"
            " ON m.outgoing = 1 AND m.sender = x'' AND s.msg_id = m.msg_id"
            " WHERE m.group_id = ? AND m.peer = ? AND m.rowid < ? ORDER BY m.rowid DESC LIMIT ?",
            (group_id, peer if not group_id else b"", before or STORED_U64_MAX, limit)).fetchall()
        return [(r[0], StoredMessage(
            id=from_db_id(r[1]), outgoing=bool(r[2]), sender=bytes(r[3]).decode(),
            peer=bytes(r[4]).decode(), group_id=r[5], refid=from_db_id(r[6]),
            timestamp_ms=r[7], type=r[8], flags=r[9], priority=r[10],
            # Received messages: DELIVERED (to us), READ once marked read.
            status=r[11] if r[2] else (Status.DELIVERED if r[12] == NEW else Status.READ),
            read=r[12] != NEW, payload=bytes(r[13]))) for r in rows]

    def mark_read(self, peer: bytes, group_id: int, ids: Iterable[int] | None) -> int:
        """Mark received messages of a conversation read; returns how many changed."""
        where = "group_id = ? AND peer = ? AND outgoing = 0 AND read = 0"
        args: list[object] = [group_id, peer if not group_id else b""]
        if ids is not None:
            wanted = [to_db_id(i) for i in ids]
            where += f" AND msg_id IN ({','.join('?' * len(wanted))})"
            args += wanted
        return self._run(f"UPDATE messages SET read = {READ_UNREPORTED} WHERE {where}",
                         args).rowcount

    def unreported_reads(self) -> list[tuple[bytes, int, list[int]]]:
        """(sender, group id, ids) of read messages whose READ report is not yet sent."""
        rows = self._run("SELECT sender, group_id, msg_id FROM messages INDEXED BY"
                         f" messages_unreported WHERE read = {READ_UNREPORTED}"
                         " ORDER BY rowid").fetchall()
        out: dict[tuple[bytes, int], list[int]] = {}
        for sender, group_id, db_id in rows:
            if db_id is not None:
                out.setdefault((bytes(sender), group_id), []).append(from_db_id(db_id))
        self._run(f"UPDATE messages SET read = {READ_REPORTED} WHERE read = {READ_UNREPORTED}")
        return [(sender, group, ids) for (sender, group), ids in out.items()]

    def _run(self, sql: str, args: Iterable[object] = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, tuple(args) if not isinstance(args, dict) else args)
        except sqlite3.Error as exc:
            raise StorageError(f"local store: {exc}") from None
