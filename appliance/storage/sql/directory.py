"""The writer's cached view of the directory: users, addresses, devices, groups.

Read through the writer's connection and cached on the writer thread (the only
thread that writes, so no locks).  `clear` drops everything: the writer calls
it whenever another connection changed the directory (`Connection.begin` says
so) and after any failed transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.storage.models import GroupRoster
from appliance.storage.sql.bulk import CHUNK, marks
from appliance.storage.sql.dialect import Connection

#: (user, sender) and (group, sender) pairs whose block answer is kept; beyond it the
#: cache starts again (an attacker naming many pairs costs reads, never memory).
MAX_CACHED_PAIRS = 100_000

class Directory:
    """Lookups by address, user, device and group, each cached after its first read."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.clear()

    def clear(self) -> None:
        """Forget everything (the directory may have changed under us)."""
        self._users: dict[tuple[int, bytes], int] = {}
        #: (app, address) pairs `prefetch` found no user for: kept for one batch only
        #: (`forget_absent`), since addresses of no one come from the senders.
        self._absent: set[tuple[int, bytes]] = set()
        self._addresses: dict[int, bytes] = {}
        self._devices: dict[int, list[int]] = {}
        self._placeholders: dict[int, int] = {}
        #: device row id -> user id; read directly by the writer's ACK loop.
        self.device_user: dict[int, int] = {}
        self._groups: dict[int, GroupRoster] = {}
        #: (user, sender) -> whether user blocks sender (1:1 messages).
        self._blocks: dict[tuple[int, int], bool] = {}
        #: (group, sender) -> the members who block sender (group messages).
        self._group_blockers: dict[tuple[int, int], frozenset[int]] = {}

    def __len__(self) -> int:
        """Entries cached (users, devices, groups, pairs): what `WriterState.oversized` bounds."""
        return (len(self._users) + len(self.device_user) + len(self._devices)
                + len(self._groups) + len(self._blocks) + len(self._group_blockers))

    # --- users and groups ---------------------------------------------------

    def user_id(self, app_id: int, address: bytes) -> int | None:
        key = (app_id, address)
        user = self._users.get(key)
        if user is None:
            if key in self._absent:
                return None
            row = self.conn.execute("SELECT id FROM users WHERE app_id = ? AND address = ?",
                                    key).fetchone()
            if row is None:
                return None
            user = self._users[key] = row[0]
            self._addresses[user] = address
        return user

    def prefetch(self, wanted: Sequence[tuple[int, bytes, int]]) -> None:
        """Read the users and block answers of many (app, address, sender) at once.

        A batch of 1:1 messages to addresses not cached cost one read each
        (and one more per new pair for blocks): a backend's arrays of 1,000
        messages to new addresses held each commit of 500 ~100 ms while the
        event loop was busy (every read gives up the GIL and waits to take it
        back), and the devices' messages in the commit waited as long.  Now a
        batch costs a statement per `CHUNK` new addresses, then per `CHUNK` new
        (user, sender) pairs.
        """
        users, conn = self._users, self.conn
        by_app: dict[int, set[bytes]] = {}
        for app, address, _ in wanted:
            if (app, address) not in users:
                by_app.setdefault(app, set()).add(address)
        for app, addresses in by_app.items():
            ordered = list(addresses)
            for start in range(0, len(ordered), CHUNK):
                chunk = ordered[start:start + CHUNK]
                for user, address in conn.execute(
                        f"SELECT id, address FROM users WHERE app_id = ?"
                        f" AND address IN ({marks(len(chunk))})", (app, *chunk)):
                    address = bytes(address)
                    users[(app, address)] = user
                    self._addresses[user] = address
            self._absent.update((app, a) for a in addresses if (app, a) not in users)
        blocks = self._blocks
        by_sender: dict[int, set[int]] = {}
        for app, address, sender in wanted:
            user = users.get((app, address))
            if user is not None and (user, sender) not in blocks:
                by_sender.setdefault(sender, set()).add(user)
        if len(blocks) + sum(map(len, by_sender.values())) > MAX_CACHED_PAIRS:
            blocks.clear()  # as `blocks` does: pairs come from the senders
        for sender, unknown in by_sender.items():
            ids = list(unknown)
            for start in range(0, len(ids), CHUNK):
                part = ids[start:start + CHUNK]
                blocking = {r[0] for r in conn.execute(
                    f"SELECT user_id FROM blocks WHERE blocked_id = ?"
                    f" AND user_id IN ({marks(len(part))})", (sender, *part))}
                for member in part:
                    blocks[(member, sender)] = member in blocking

    def forget_absent(self) -> None:
        """The batch `prefetch` read for is done: addresses of no one are forgotten."""
        self._absent.clear()

    def address(self, user_id: int) -> bytes:
        address = self._addresses.get(user_id)
        if address is None:
            row = self.conn.execute("SELECT address FROM users WHERE id = ?",
                                    (user_id,)).fetchone()
            address = self._addresses[user_id] = b"" if row is None else bytes(row[0])
        return address

    def app_of(self, user_id: int) -> int:
        row = self.conn.execute("SELECT app_id FROM users WHERE id = ?", (user_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def group(self, group_id: int) -> GroupRoster | None:
        """The group's roster whatever its app (`storage.routing` checks the app).

        Only groups that exist are cached: ids of none come from the senders
        (any of 2**63), and remembering each one grew the server ~80 bytes an id
        without bound; refusing one costs a primary-key read instead.
        """
        group = self._groups.get(group_id)
        if group is not None:
            return group
        row = self.conn.execute("SELECT app_id, flags FROM groups WHERE id = ?",
                                (group_id,)).fetchone()
        if row is None:
            return None
        members = dict(self.conn.execute("SELECT user_id, perms FROM members"
                                         " WHERE group_id = ?", (group_id,)).fetchall())
        group = self._groups[group_id] = GroupRoster(row[0], members, row[1])
        return group

    # --- blocks (issue 16) -----------------------------------------------------

    def blocks(self, user_id: int, sender_id: int) -> bool:
        """Whether `user_id` blocks `sender_id`; cached per pair (one read per new pair)."""
        key = (user_id, sender_id)
        found = self._blocks.get(key)
        if found is None:
            if len(self._blocks) >= MAX_CACHED_PAIRS:
                self._blocks.clear()  # pairs come from senders: bounded, re-read as needed
            found = self._blocks[key] = self.conn.execute(
                "SELECT 1 FROM blocks WHERE user_id = ? AND blocked_id = ?", key
            ).fetchone() is not None
        return found

    def group_blockers(self, group_id: int, sender_id: int) -> frozenset[int]:
        """The members of a group who block `sender_id`; cached per (group, sender)."""
        key = (group_id, sender_id)
        found = self._group_blockers.get(key)
        if found is None:
            if len(self._group_blockers) >= MAX_CACHED_PAIRS:
                self._group_blockers.clear()
            found = self._group_blockers[key] = frozenset(r[0] for r in self.conn.execute(
                "SELECT b.user_id FROM blocks b JOIN members m ON m.user_id = b.user_id"
                " WHERE b.blocked_id = ? AND m.group_id = ?", (sender_id, group_id)))
        return found

    # --- devices --------------------------------------------------------------

    def user_devices(self, user_id: int) -> list[int]:
        """The user's real devices (never the placeholder); cached."""
        devices = self._devices.get(user_id)
        if devices is None:
            self._load_devices(user_id)
            devices = self._devices[user_id]
        return devices

    def _load_devices(self, user_id: int) -> None:
        rows = self.conn.execute("SELECT id, device FROM devices WHERE user_id = ?",
                                 (user_id,)).fetchall()
        self._devices[user_id] = [r[0] for r in rows if r[1] != b""]
        self._placeholders[user_id] = next((r[0] for r in rows if r[1] == b""), 0)
        for device_rowid, _ in rows:
            self.device_user[device_rowid] = user_id

    def devices_or_placeholder(self, user_id: int, now_ms: int) -> list[int]:
        devices = self.user_devices(user_id)
        if devices:
            return devices
        placeholder = self._placeholders.get(user_id, 0)
        if not placeholder:
            # The user has never connected: queue on a placeholder device that
            # the first real device inherits (see `devices.register`).
            cur = self.conn.execute("INSERT INTO devices (user_id, device, last_seen_ms)"
                                    " VALUES (?, x'', ?)", (user_id, now_ms))
            assert cur.lastrowid is not None
            placeholder = self._placeholders[user_id] = cur.lastrowid
            self.device_user[placeholder] = user_id
        return [placeholder]

    def device_added(self, user_id: int, device_rowid: int) -> None:
        """A device was registered (and placeholders or stale ones perhaps removed)."""
        self._devices.pop(user_id, None)
        self._placeholders.pop(user_id, None)
        self.device_user[device_rowid] = user_id

    def owner(self, device: int) -> int | None:
        user = self.device_user.get(device)
        if user is None:
            row = self.conn.execute("SELECT user_id FROM devices WHERE id = ?",
                                    (device,)).fetchone()
            if row is None:
                return None
            user = self.device_user[device] = row[0]
        return user
