"""Per-device session state kept while a device is connected.

`__slots__` and lazily filled fields keep an idle session small: the target
is a few hundred bytes on top of the transport's own objects (issue #2 asks
for <= 2,500 bytes per idle authenticated connection in total).
"""

from __future__ import annotations

from appliance.engine.ports import Link

#: The `acked` value of a session that has no acknowledgement pending.  Never
#: mutated: `Engine.on_ack` replaces it with a set of the session's own.
NO_ACKS: set[int] = set()


class Session:
    """One authenticated device connection.

    A submission (`Engine.submit`: an app's backend) has a session too, never
    registered, with `device_rowid` 0: it is no device.

    Attributes:
        inflight: delivery handle (seq) -> priority, for messages written to
            this connection and not yet acknowledged.
        acked: handles the device acknowledged whose deletion is not yet
            committed; excluded from backlog reads so they are not resent.
        backlog: True while queued messages are being paged in from the store;
            cut-through delivery then stands aside so priority order holds.
        skipped: bumped whenever a message was left in the store for the
            backlog loader; the loader re-reads if it changed under it.
    """

    __slots__ = ("acked", "address", "app_id", "backlog", "closed", "device_id", "device_rowid",
                 "draining", "extensions",
                 "inflight", "link", "relays", "report_backlog", "report_cursor",
                 "report_skipped", "send_block", "send_credit", "skipped", "token_expires_ms",
                 "token_hash", "unconfirmed", "user_id")

    def __init__(self, link: Link, app_id: int, user_id: int, address: bytes,
                 device_id: bytes, device_rowid: int, report_cursor: int,
                 token_hash: bytes = b"", token_expires_ms: int = 2**62) -> None:
        self.link = link
        self.app_id = app_id
        self.user_id = user_id
        self.address = address
        self.device_id = device_id
        self.device_rowid = device_rowid
        self.report_cursor = report_cursor
        self.inflight: dict[int, int] = {}
        #: handles acknowledged whose delivery rows are not deleted yet (the
        #: commit is pending): a backlog read must not send them again.
        # Shared empty set until the first ACK: 216 bytes saved per idle session.
        self.acked: set[int] = NO_ACKS
        self.backlog = True
        self.draining = False
        self.skipped = 0
        self.report_backlog = True
        self.report_skipped = 0
        self.unconfirmed = 0
        #: Real-time messages waiting on a store lookup (`limits.max_pending_relays`).
        self.relays = 0
        #: Messages it may send before it asks its user's rate for more
        #: (`appliance.engine.quotas.Quotas.may_send`).
        self.send_credit = 0
        self.send_block = 1
        self.closed = False
        #: The client set HelloFlag.EXTENSIONS: it may be sent extension frames
        #: (PROTOCOL.md §8); a client that did not would fail on them.
        self.extensions = False
        #: The token that opened the session, re-checked while it is open
        #: (`appliance.engine.credentials`).
        self.token_hash = token_hash
        self.token_expires_ms = token_expires_ms

    def __lt__(self, other: Session) -> bool:
        # The expiry heap of `CredentialWatcher` holds the sessions themselves:
        # a (time, tiebreak, session) tuple would add ~90 bytes per connection.
        return self.token_expires_ms < other.token_expires_ms

    def __repr__(self) -> str:
        return f"Session({self.address!r}/{self.device_id!r}, inflight={len(self.inflight)})"
