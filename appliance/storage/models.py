"""Records that cross the storage interface.

Plain slotted classes, not frozen dataclasses, for the records built once per
message on the hot path (`NewMessage`, `Accepted`, `Pending`, `Receipt`): they
are created tens of thousands of times a second and frozen dataclasses pay an
`object.__setattr__` per field.  Everything else is a frozen dataclass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

# Perm and GroupFlag are defined with the wire (PROTOCOL.md §8.3), where they travel.
from appliance.protocol.wire.groups import GroupFlag as GroupFlag, Perm as Perm
from appliance.storage.migrations import Migration


class Outcome(IntEnum):
    """What `MessageStore.write` did with one `NewMessage`."""

    STORED = 0  # new, committed durably
    DUPLICATE = 1  # (sender, id) was stored before: `status` is its current status
    REJECTED = 2  # not stored: `status` is the error status (INVALID_DEST, NOT_MEMBER...)
    #: Not stored, to be relayed to whoever is online (a group with `GroupFlag.NO_STORE`):
    #: `Accepted.targets` then lists the recipients' user ids, not devices.
    RELAY = 3


class NewMessage:
    """A reliable message to store: every M2 property, already validated."""

    __slots__ = ("app_id", "expires_ms", "flags", "group_id", "msg_id", "payload", "peer",
                 "priority", "refid", "sender_device", "sender_id", "type")

    def __init__(self, app_id: int, sender_id: int, sender_device: int, msg_id: int,
                 peer: bytes, group_id: int, refid: int, expires_ms: int, type: int,
                 flags: int, priority: int, payload: bytes) -> None:
        self.app_id = app_id
        self.sender_id = sender_id
        self.sender_device = sender_device
        self.msg_id = msg_id
        self.peer = peer
        self.group_id = group_id
        self.refid = refid
        self.expires_ms = expires_ms
        self.type = type
        self.flags = flags
        self.priority = priority
        self.payload = payload


class Accepted:
    """The result of storing one `NewMessage`.

    `targets` lists the device row ids that got a delivery row (recipients'
    devices and the sender's other devices) when `outcome` is STORED.
    """

    __slots__ = ("outcome", "seq", "status", "targets", "timestamp_ms")

    def __init__(self, outcome: Outcome, status: int, seq: int = 0, timestamp_ms: int = 0,
                 targets: tuple[int, ...] = ()) -> None:
        self.outcome = outcome
        self.status = status
        self.seq = seq
        self.timestamp_ms = timestamp_ms
        self.targets = targets


class Receipt:
    """A stored status report for the user who sent message `msg_id`."""

    __slots__ = ("group_id", "msg_id", "peer", "report_seq", "status", "timestamp_ms", "user_id")

    def __init__(self, user_id: int, report_seq: int, msg_id: int, status: int, peer: bytes,
                 group_id: int, timestamp_ms: int) -> None:
        self.user_id = user_id
        self.report_seq = report_seq
        self.msg_id = msg_id
        self.status = status
        self.peer = peer
        self.group_id = group_id
        self.timestamp_ms = timestamp_ms


class Pending:
    """A message queued for one device, as `MessageStore.pending` returns it.

    `peer` is the sender's address, or the destination's when `outgoing`
    (a copy of what another device of the same user sent).
    """

    __slots__ = ("expires_ms", "flags", "group_id", "msg_id", "outgoing", "payload", "peer",
                 "priority", "refid", "seq", "timestamp_ms", "type")

    def __init__(self, seq: int, msg_id: int, peer: bytes, group_id: int, refid: int,
                 timestamp_ms: int, expires_ms: int, type: int, flags: int, priority: int,
                 payload: bytes, outgoing: bool) -> None:
        self.seq = seq
        self.msg_id = msg_id
        self.peer = peer
        self.group_id = group_id
        self.refid = refid
        self.timestamp_ms = timestamp_ms
        self.expires_ms = expires_ms
        self.type = type
        self.flags = flags
        self.priority = priority
        self.payload = payload
        self.outgoing = outgoing


@dataclass(frozen=True, slots=True)
class QueueQuota:
    """How much may wait in the queues (config ``limits.max_queued_*``, SPEC M13).

    Counted per delivery row, i.e. once per device that waits for a message:
    a user's rows and payload bytes, an app's payload bytes.  A message that
    would go over is not stored (INBOX_FULL); a group message skips the
    members that are full (INBOX_FULL if that is every other member).
    """

    max_messages: int
    max_bytes: int
    max_app_bytes: int


@dataclass(slots=True)
class WriteBatch:
    """Everything the engine wants committed in one group-commit transaction.

    Attributes:
        messages: reliable messages to store.
        acks: (device row id, seq, priority) a device acknowledged; priority
            is -1 when the engine does not know it (a stale acknowledgement).
        reads: (reader user id, app id, sender address, group id, message ids).
        report_acks: device row id -> highest report_seq it confirmed.
        seen: device row id -> when it last connected (not urgent: batched).
        quota: what may wait in the queues; None: no limit.
    """

    messages: list[NewMessage] = field(default_factory=list)
    acks: list[tuple[int, int, int]] = field(default_factory=list)
    reads: list[tuple[int, int, bytes, int, tuple[int, ...]]] = field(default_factory=list)
    report_acks: dict[int, int] = field(default_factory=dict)
    seen: dict[int, int] = field(default_factory=dict)
    quota: QueueQuota | None = None

    def __len__(self) -> int:
        return (len(self.messages) + len(self.acks) + len(self.reads) + len(self.report_acks)
                + len(self.seen))


@dataclass(slots=True)
class WriteResult:
    """What a committed `WriteBatch` produced."""

    accepted: list[Accepted]
    receipts: list[Receipt]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an access token belongs to."""

    app_id: int
    user_id: int
    address: bytes
    token_expires_ms: int


@dataclass(frozen=True, slots=True)
class Login:
    """What one read tells about a HELLO: the token's owner and the device.

    `device` is None for a device never seen before (register it).  The two
    flags say whether anything waits for it, so that an idle reconnect costs
    no further reads.
    """

    principal: Principal
    device: DeviceRecord | None
    has_pending: bool
    has_receipts: bool


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A registered device: its row id and how far it has confirmed reports.

    `inherited`: from `register_device`, whether a new device got queued
    messages of its user (False: nothing to read for it).
    """

    device_rowid: int
    report_cursor: int
    inherited: bool = field(default=True, compare=False)


@dataclass(frozen=True, slots=True)
class GroupMember:
    """A member of a group and the member's permissions (SPEC M5)."""

    user_id: int
    address: bytes
    perms: int


@dataclass(frozen=True, slots=True)
class GroupRoster:
    """A group as routing needs it (`appliance.storage.routing`): its app, who is in it,
    and its `GroupFlag` bits.

    `members` maps each member's user id to its `Perm` bits; it is read, never
    changed (the writer caches rosters until the directory changes).
    """

    app_id: int
    members: Mapping[int, int]
    flags: int = GroupFlag.DEFAULT


@dataclass(frozen=True, slots=True)
class AppInfo:
    """An app (tenant)."""

    app_id: int
    name: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user as the admin commands list it."""

    user_id: int
    app_id: int
    address: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A group as the admin commands list it."""

    group_id: int
    app_id: int
    name: str
    members: tuple[GroupMember, ...]
    flags: int = GroupFlag.DEFAULT


@dataclass(frozen=True, slots=True)
class MemberReceipt:
    """Where one recipient of a group message stands (`MessageReceipts`)."""

    address: bytes
    #: SENT (nothing yet), DELIVERED, READ or EXPIRED.
    status: int
    #: When it reached `status` (for SENT: when the message was accepted).
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class MessageReceipts:
    """A stored message's delivery state, for its sender (``GET /v1/messages/{id}/receipts``).

    A group message has a status per recipient (the members with RECEIVE when
    it was accepted, its sender excluded; `members` is one page of them, in
    address order) and the aggregate: how many of the `recipients` delivered
    (or read) and read it.  A one-to-one message has `status` alone.
    """

    msg_id: int
    group_id: int
    status: int
    accepted_ms: int
    recipients: int = 0
    delivered: int = 0
    read: int = 0
    members: tuple[MemberReceipt, ...] = ()

    @property
    def delivered_all(self) -> bool:
        """Every recipient has a device that acknowledged it (or read it)."""
        return self.recipients > 0 and self.delivered >= self.recipients

    @property
    def read_all(self) -> bool:
        """Every recipient read it."""
        return self.recipients > 0 and self.read >= self.recipients


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new access token.  `token` is shown once and never stored."""

    token: str
    user_id: int
    expires_ms: int


@dataclass(frozen=True, slots=True)
class CredentialChange:
    """One revocation, deletion, rename or secret change (`CredentialStore`).

    `user_id` is None when the app's secrets changed, not a user's.
    """

    version: int
    app_id: int
    user_id: int | None


@dataclass(frozen=True, slots=True)
class StoredCertificate:
    """A certificate the ACME manager obtained, shared by every process on the store.

    `name` is the certificate's key (its hostnames, sorted, comma-joined);
    `version` rises by one on every save, so a process polling
    `CertificateStore.certificate_version` learns of a new one with one read.
    """

    name: str
    fullchain_pem: bytes
    key_pem: bytes
    issuer: str  # the ACME directory URL that issued it
    not_before_ms: int
    not_after_ms: int
    version: int = 0


@dataclass(frozen=True, slots=True)
class RenewalState:
    """Where obtaining or renewing `name` stands, kept across restarts.

    `attempts` counts failures since the last success (the backoff's
    exponent); `next_attempt_ms` is the earliest time any process may ask a CA
    again (backoff, or a CA's ``Retry-After`` / rate-limit reset).
    """

    name: str
    attempts: int = 0
    next_attempt_ms: int = 0
    last_attempt_ms: int = 0
    last_error: str = ""
    #: An operator's request (`tidings cert renew`), from any process:
    #: 0 none, `RENEW_IF_DUE` (renew now if due, skipping the backoff),
    #: `RENEW_FORCE` (renew now); the renewing process clears it.
    request: int = 0
    requested_ms: int = 0


RENEW_IF_DUE, RENEW_FORCE = 1, 2


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A file of an app (issue 15): an upload in progress, or complete with its blob.

    `size` is the declared length until the upload completes, then the final
    one (a cleaned image's may differ); `received` counts what arrived, and stays
    the declared length once complete (what tus reports as the final offset).  `sha256`
    names the content-addressed blob once complete.  `expires_ms` None means
    kept (a profile or group picture); otherwise the sweep removes the file
    after it (grants extend it, see `FileStore.grant_file`).
    """

    file_id: str
    app_id: int
    owner_id: int
    size: int
    received: int
    sha256: bytes | None
    content_type: str
    name: str
    width: int
    height: int
    created_ms: int
    expires_ms: int | None

    @property
    def complete(self) -> bool:
        """Whether every byte arrived and the blob is committed."""
        return self.sha256 is not None


@dataclass(frozen=True, slots=True)
class FileVariant:
    """A derived image of a complete file (a thumbnail, a picture size), in a blob of its own.

    `variant` names it, e.g. ``t320.webp`` or ``p96.jpeg``.
    """

    variant: str
    sha256: bytes
    size: int
    content_type: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """A row of schema_migrations."""

    version: int
    name: str
    checksum: str
    applied_ms: int


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """What the database has and what this binary would still apply (`maintenance.status`)."""

    applied: tuple[AppliedMigration, ...]
    pending: tuple[Migration, ...]


@dataclass(frozen=True, slots=True)
class BootstrapReport:
    """What preparing a database on a MariaDB server found and did (`maintenance.bootstrap`)."""

    server_version: str
    created_database: bool
    created_user: bool
    #: Settings that weaken durability, with their values (empty = fine).
    warnings: tuple[str, ...]
