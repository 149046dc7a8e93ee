"""Accepting a batch's messages: routing, dedupe, quotas, one message row and its delivery rows.

Runs inside the writer's group-commit transaction (`Writer.apply`), so a
message row, its (sender, id) dedupe key and one delivery row per target
device are written together (SPEC M4).  The writer thread is the reliable
path's bottleneck: `accept_all` does its per-message work in one loop over
the batch with module functions and locals, never a call per row into
another layer.
"""

from __future__ import annotations

from functools import partial

from appliance.protocol.attachments import FILE
from appliance.protocol.wire.constants import Flag, Status
from appliance.protocol.wire.ids import LOWEST_DB_ID, to_db_id
from appliance.storage.models import Accepted, NewMessage, Outcome, QueueQuota
from appliance.storage.routing import group_recipients, group_stores, peer_recipients
from appliance.storage.sql import aggregate
from appliance.storage.sql.file_access import accept_shared
from appliance.storage.sql.state import WriterState

#: Plain ints, not the enum members: they go into rows the drivers bind.
_SENT = int(Status.SENT)
_BLOCKED = int(Status.BLOCKED)
_SYSTEM = Flag.SYSTEM
_RECEIPTS = aggregate.RECEIPTS
#: Cached message metadata beyond which `WriterState.recent` starts afresh.
_RECENT_MAX = 200_000


def accept_all(s: WriterState, messages: list[NewMessage], now_ms: int,
               quota: QueueQuota | None = None) -> list[Accepted]:
    """Store a batch of messages with one dedupe query and two executemany calls.

    Per-row `execute` costs ~15 us of Python and SQLite call overhead; the
    batched form keeps the writer thread (the reliable path's bottleneck)
    near a few microseconds per row.
    """
    results: list[Accepted | None] = [None] * len(messages)
    plans = []
    blocked = []
    directory = s.directory
    # One read per CHUNK new addresses, not one per message (`Directory.prefetch`).
    directory.prefetch([(m.app_id, m.peer, m.sender_id) for m in messages if not m.group_id])
    for i, m in enumerate(messages):
        recipients = route(s, m)
        if isinstance(recipients, int):
            results[i] = Accepted(Outcome.REJECTED, recipients)
            if recipients == _BLOCKED:
                blocked.append((i, m, to_db_id(m.msg_id)))
        elif m.group_id and not kept(s, m):
            # NO_STORE: nothing written, no dedupe; the engine relays it.
            results[i] = Accepted(Outcome.RELAY, _SENT, 0, now_ms, tuple(recipients))
        else:
            plans.append((i, m, recipients, to_db_id(m.msg_id)))
    # Apps number their messages upwards (the SDK does), so an id above
    # the sender's highest stored one is new without an index lookup.  A
    # message refused BLOCKED may be the resend of one stored before the
    # block: it gets its stored status, as any duplicate (PROTOCOL.md §6).
    keys = [(m.sender_id, db_id) for _, m, _, db_id in plans
            if db_id is not None and db_id <= highest_id(s, m.sender_id)]
    if blocked:
        keys += [(m.sender_id, db_id) for _, m, db_id in blocked
                 if db_id is not None and db_id <= highest_id(s, m.sender_id)]
    stored = existing(s, keys)
    for i, m, db_id in blocked:
        old = stored.get((m.sender_id, db_id))
        if old is not None:
            results[i] = Accepted(Outcome.DUPLICATE, old[1], old[0], old[2])
    highest = s.highest
    key: tuple[int, int | None]
    rows, deliveries = [], []
    ledger: list[tuple[int, int, int, int]] = []
    counts: list[tuple[int, int]] = []
    recent = s.recent
    if len(recent) > _RECENT_MAX:
        recent.clear()
    for i, m, recipients, db_id in plans:
        key = (m.sender_id, db_id)
        old = stored.get(key) if db_id is not None else None
        if old is not None:
            results[i] = Accepted(Outcome.DUPLICATE, old[1], old[0], old[2])
            continue
        if m.flags & FILE:  # the one test a message without files pays
            shared = accept_shared(s.conn, m, recipients, now_ms, s.file_retention_ms,
                                   partial(targets, s, m, recipients, now_ms, quota))
            if isinstance(shared, int):
                results[i] = Accepted(Outcome.REJECTED, shared)
                continue
            devices: list[int] | None = shared
        else:
            devices = targets(s, m, recipients, now_ms, quota)
        if devices is None:
            results[i] = Accepted(Outcome.REJECTED, Status.INBOX_FULL)
            continue
        seq = s.next_seq
        s.next_seq = seq + 1
        if db_id is not None:
            stored[key] = (seq, _SENT, now_ms)  # a resend later in this batch
            if db_id > highest[m.sender_id]:
                highest[m.sender_id] = db_id
        dest_user = 0 if m.group_id else recipients[0]
        rows.append((seq, m.sender_id, db_id, dest_user, m.group_id,
                     to_db_id(m.refid) or 0, now_ms, m.expires_ms, m.type, m.flags,
                     m.priority, _SENT, m.payload))
        deliveries.extend([(d, m.priority, seq, m.expires_ms) for d in devices])
        if m.group_id and m.flags & _RECEIPTS:
            aggregate.open_ledger(s, seq, aggregate.recipients_reached(s, m.sender_id, devices),
                                  now_ms, ledger, counts)
        recent[seq] = [m.sender_id, db_id, m.flags, _SENT, m.group_id,  # type: ignore[list-item]
                       len(m.payload), m.app_id]
        results[i] = Accepted(Outcome.STORED, _SENT, seq, now_ms, tuple(devices))
    s.conn.executemany(
        "INSERT INTO messages (seq, sender_id, msg_id, dest_user, dest_group, refid,"
        " accepted_ms, expires_ms, type, flags, priority, status, payload)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    s.conn.executemany(s.sql_deliver, deliveries)
    if counts:
        aggregate.write_ledgers(s.conn, ledger, counts)
    directory.forget_absent()  # on failure `WriterState.clear` forgets it
    return results  # type: ignore[return-value]  # every slot was filled above


def route(s: WriterState, m: NewMessage) -> list[int] | Status:
    """The recipient user ids of `m`, or the error status that rejects it (`storage.routing`)."""
    directory = s.directory
    if m.group_id:
        roster = directory.group(m.group_id)
        system = bool(m.flags & _SYSTEM)
        if roster is None or roster.app_id != m.app_id or system:
            return group_recipients(roster, m.app_id, m.sender_id, system)
        return group_recipients(roster, m.app_id, m.sender_id, False,
                                directory.group_blockers(m.group_id, m.sender_id))
    peer = directory.user_id(m.app_id, m.peer)
    return peer_recipients(peer, peer is not None and directory.blocks(peer, m.sender_id))


def kept(s: WriterState, m: NewMessage) -> bool:
    """Whether group message `m` (routed: its group exists) is stored (`storage.routing`)."""
    roster = s.directory.group(m.group_id)
    return roster is None or group_stores(roster, bool(m.flags & _SYSTEM))


def highest_id(s: WriterState, sender: int) -> int:
    """An upper bound of the sender's stored message ids; cached.

    Retiring messages only lowers the true maximum, so the cached value
    stays a valid bound until the caches are dropped.
    """
    value = s.highest.get(sender)
    if value is None:
        found = s.conn.execute("SELECT max(msg_id) FROM messages WHERE sender_id = ?",
                               (sender,)).fetchone()[0]
        value = s.highest[sender] = LOWEST_DB_ID if found is None else found
    return value


def existing(s: WriterState, keys: list[tuple[int, int]]
             ) -> dict[tuple[int, int | None], tuple[int, int, int]]:
    """(sender, id) -> (seq, status, accepted_ms) of those already stored."""
    found: dict[tuple[int, int | None], tuple[int, int, int]] = {}
    for start in range(0, len(keys), 512):
        chunk = keys[start:start + 512]
        # Pad to a power of two with pairs that match nothing, so that a
        # handful of statement texts serve every batch size from the
        # statement cache instead of a fresh prepare per commit.
        size = 8
        while size < len(chunk):
            size *= 2
        sql = s.sql_existing.get(size)
        if sql is None:
            sql = s.sql_existing[size] = s.existing_for(size)
        flat = [v for key in chunk for v in key] + [-1, -1] * (size - len(chunk))
        for sender, db_id, seq, status, accepted in s.conn.execute(sql, flat):
            found[(sender, db_id)] = (seq, status, accepted)
    return found


def targets(s: WriterState, m: NewMessage, recipients: list[int], now_ms: int,
            quota: QueueQuota | None = None) -> list[int] | None:
    """Every device that gets a delivery row: recipients' and the sender's others.

    None: the message is over a quota (INBOX_FULL): its 1:1 recipient's or
    its app's.  A group message skips the members that are full instead.
    The sender's own copies count in its usage but are never refused.
    """
    found: list[int] = []
    usage = s.usage
    directory = s.directory
    size = len(m.payload)
    if quota is not None and len(recipients) > 1:
        usage.prefetch(recipients)  # a statement per 500 members, not one each
    full = 0
    for user in recipients:
        devices = directory.devices_or_placeholder(user, now_ms)
        if quota is not None and user != m.sender_id \
                and usage.inbox_full(user, len(devices), size, quota):
            if not m.group_id:
                return None
            full += 1
            continue
        found.extend(devices)
    if full and full == len(recipients) - (m.sender_id in recipients):
        return None  # every other member is full: the group message reaches no one
    if m.sender_id not in recipients:
        found.extend(directory.user_devices(m.sender_id))
    if m.sender_device in found:
        found.remove(m.sender_device)
    if quota is not None and usage.app_full(m.app_id, size * len(found), quota):
        return None
    owner = directory.device_user
    for device in found:
        holder = owner.get(device) or directory.owner(device)
        if holder is not None:
            usage.add(holder, m.app_id, 1, size)
    return found
