"""Per-user quotas the engine enforces (SPEC M13: per-user send rates and
per-recipient quotas; issue 12 finding 6).

* a send rate per user, over all its devices (``limits.send_rate_per_s`` and
  ``limits.send_burst``): a reliable MESSAGE above it is answered
  RATE_LIMITED and nothing is stored.  Real-time messages are not counted:
  they are never stored, and a user sends them at up to ~12,000/s in the
  throughput benchmark (50 senders, 590,000 msg/s); what bounds them is the
  connection's own limits (reading pauses with the peer's output, a receiver
  that does not read is closed SLOW_CONSUMER);
* a rate of new device registrations per user
  (``limits.device_registrations_per_hour`` and
  ``limits.device_registration_burst``): every new device id costs a
  delivery row per message for as long as it is registered, so a HELLO with
  a new device id above it is refused (CLOSE TOO_MANY_DEVICES);
* the queue quotas (``limits.max_queued_messages``, ``limits.max_queued_bytes``,
  ``limits.max_app_queued_bytes``), which the store checks in the same
  transaction that would queue a message (`QueueQuota`): INBOX_FULL.

ACK and READ frames may each name thousands of seqs or ids (up to what a
frame holds): the store handles them in bulk, and `IdBudget` stops reading
a connection whose seqs and ids waiting for the next commit exceed
``limits.window``, until that commit: an ACK or READ flood is held in the
kernel's socket buffer, not in the server's memory, and nothing is dropped.

The rate state is a token bucket per user (`appliance.ratelimit`), kept for
at most ``limits.max_rate_users`` users: memory stays bounded whatever the
number of users an attacker holds.
"""

from __future__ import annotations

from appliance.config.limits import EngineLimits
from appliance.engine.fanout import GroupFanout
from appliance.engine.session import Session
from appliance.ratelimit import UserRates
from appliance.storage.models import QueueQuota

#: The `Session.send_credit` of a sender the per-user rate does not apply to:
#: the app's backend (``POST /v1/messages``, authenticated by the app secret and
#: held by the HTTP limits); the queue quotas still apply to what it sends.
UNLIMITED_CREDIT = 1 << 62


class IdBudget:
    """Seqs and ids from ACK and READ frames per session in the open batch."""

    __slots__ = ("_load", "_paused", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._load: dict[Session, int] = {}
        self._paused: list[Session] = []

    def charge(self, session: Session, count: int) -> None:
        """`count` more seqs or ids of `session` wait for the next commit."""
        load = self._load.get(session, 0) + count
        self._load[session] = load
        if load > self.limit and load - count <= self.limit:
            session.link.pause_reading()
            self._paused.append(session)

    def batch_taken(self) -> list[Session]:
        """The open batch goes to the store: the sessions to resume once it is committed."""
        # A new list every time: the caller holds this one until the commit,
        # and sessions paused meanwhile belong to the next batch.
        paused, self._paused = self._paused, []
        if self._load:
            self._load = {}
        return paused


class Quotas:
    """The engine's quota state, built from `EngineLimits`."""

    __slots__ = ("_seen_refreshed", "credit", "fanout", "ids", "queue", "registrations",
                 "sends", "stale_s")

    def __init__(self, limits: EngineLimits) -> None:
        self.sends = UserRates(limits.send_rate_per_s, limits.send_burst,
                               limits.max_rate_users)
        #: Tokens a session takes from its user's bucket at a time (see `may_send`).
        self.credit = max(1, min(32, limits.send_burst // 8))
        self.registrations = UserRates(limits.device_registrations_per_hour / 3600,
                                       limits.device_registration_burst,
                                       limits.max_rate_users)
        #: Group messages' deliveries per user (`appliance.engine.fanout`).
        self.fanout = GroupFanout(limits)
        self.queue = QueueQuota(limits.max_queued_messages, limits.max_queued_bytes,
                                limits.max_app_queued_bytes)
        self.stale_s = limits.device_stale_s
        self.ids = IdBudget(limits.window)
        self._seen_refreshed = 0.0

    def may_send(self, session: Session, now: float) -> bool:
        """A session's MESSAGE ran out of credit: take more from its user's bucket.

        On the hot path a message costs a decrement of `session.send_credit`
        (the engine's); only every `credit` messages does a session come here
        for more (a clock read and a bucket: ~0.9 us, ~7% of a transient
        message's budget if paid per message).  The tokens are the user's, so
        its devices together stay within its rate; a session that closes with
        credit left loses at most `credit` of them.
        """
        # Blocks grow 1, 2, 4... up to `credit`: a session that sends one
        # message (a reconnect, a REST request) takes one token, not a block.
        wanted = session.send_block
        granted = self.sends.take_up_to(session.user_id, now, wanted)
        session.send_credit = granted
        if granted == wanted and wanted < self.credit:
            session.send_block = min(self.credit, 2 * wanted)
        return granted > 0

    def may_register(self, user_id: int, now: float) -> bool:
        """A new device id of `user_id`: within its registration rate?"""
        return self.registrations.take(user_id, now)

    def seen_refresh_due(self, now: float) -> bool:
        """Whether connected devices' last-seen times should be written again.

        A device's last-seen time is written when it connects; one connected
        for longer than ``device_stale_s`` would look stale and be forgotten
        under its feet, so every quarter of that period the engine writes
        the time of every connected device again.
        """
        if now - self._seen_refreshed < self.stale_s / 4:
            return False
        self._seen_refreshed = now
        return True
