"""The engine's slice of the configuration (``[limits]``).

Defined here, with the rest of the configuration tree, and imported by the
engine: the one import that runs from the engine up to `appliance.config`.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.protocol.wire.constants import DEFAULT_EXPIRY_S


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """The engine's slice of the configuration (config key ``limits.*``)."""

    max_devices: int = 8
    max_payload_bytes: int = 64 * 1024
    max_expiry_s: int = DEFAULT_EXPIRY_S
    window: int = 1000
    #: A sender with this many messages awaiting commit is not read from until
    #: half of them are confirmed (TCP then pushes back on the client).
    max_unconfirmed: int = 5000
    #: Real-time messages of one sender that wait on a store lookup (an offline
    #: recipient, a group's members) before the sender is not read from: each
    #: holds its payload, and a flood once held 763 MiB of them (issue 12).
    max_pending_relays: int = 64
    #: Messages submitted by senders that are not connections (`Engine.submit`: app
    #: backends over ``POST /v1/messages``) and not answered yet, over the whole server
    #: and per app.  A device is paused at `max_unconfirmed`; a submission has no
    #: connection to pause, so past these it is refused whole (REST 503 / 429 with
    #: Retry-After): otherwise what one backend submits has no bound but the HTTP
    #: body budget (400 arrays of 1,000 once held 800 MiB and one commit of them
    #: took the honest clients' messages seconds, issue 16).
    max_submitted: int = 8000
    max_app_submitted: int = 4000
    #: Of those, how many one group commit takes (devices' messages all go in the
    #: next one): the rest wait for the commit after, so that a backend at full
    #: rate does not make every commit, and the devices' messages in it, wait.
    commit_max_submitted: int = 500
    #: Deliveries of group messages one commit takes (estimated from each group's
    #: last commit); the other group messages wait for the next commit, and 1:1
    #: messages never wait behind them.
    commit_max_fanout: int = 2_000
    #: Group commit pacing (see `Engine._pace`): a batch smaller than
    #: `commit_batch` waits until `commit_window_ms` after the previous commit.
    commit_window_ms: float = 2.0
    commit_batch: int = 64
    sweep_interval_s: float = 5.0
    #: How often the server reads the credential change log and closes the
    #: sessions whose token was revoked, whose user was deleted or renamed
    #: (by this process or the CLI), and how late an expired token's session
    #: may be closed at most (PROTOCOL.md §5.1 promises 1 s with 0.5).
    credentials_poll_s: float = 0.5
    keepalive_s: int = 60
    max_frame_bytes: int = 64 * 1024 + 512
    # --- quotas (SPEC M13: per-user send rates and per-recipient quotas) ----
    #: Reliable messages a user may send per second, over all its devices, and
    #: the burst it may save up; above it the answer is RATE_LIMITED, nothing
    #: stored (real-time messages are not counted: see engine/quotas.py).
    send_rate_per_s: float = 3000.0
    send_burst: int = 6000
    #: What may wait for one user, counted once per device that waits for it
    #: (its queue): above either, a message for it is refused with INBOX_FULL.
    max_queued_messages: int = 20_000
    max_queued_bytes: int = 128 * 1024 * 1024
    #: Total payload bytes queued for the users of one app (INBOX_FULL above).
    max_app_queued_bytes: int = 4 * 1024 * 1024 * 1024
    #: A device not connected for this long is forgotten when its user next
    #: registers a new device; what was queued for it passes to the new one.
    device_stale_s: int = 3 * 86400
    #: New device ids a user may register per hour, and the burst it may save
    #: up; a HELLO above it is closed with TOO_MANY_DEVICES.
    device_registrations_per_hour: float = 6.0
    device_registration_burst: int = 20
    #: Deliveries a user's group messages may create per second (one per member
    #: device a message is queued or relayed to), and the burst it may save up;
    #: above it a group message is answered RATE_LIMITED.  One message to a big
    #: group costs the store as much as that many 1:1 messages: without this, one
    #: user writing to a group of 2,000 at the message rate took every honest
    #: client's p99 from 5 ms to 1.8 s (issue 16).
    fanout_rate_per_s: float = 20_000.0
    fanout_burst: int = 40_000
    #: Users whose rate state is kept (the oldest are forgotten beyond it).
    max_rate_users: int = 100_000
    # --- presence and blocking (SPEC M6, issue 16; PROTOCOL.md §8.2) ----------
    #: Users one device may watch (PRESENCE_SUBSCRIBE); announced in WELCOME.
    max_presence_subscriptions: int = 1000
    #: How long a typing state lasts without a refresh; announced in WELCOME.
    typing_timeout_s: int = 5
    #: PRESENCE_SET frames (typing, activity) one device may send per second, and the
    #: burst it may save up; the ones above it are dropped.
    presence_rate_per_s: float = 4.0
    presence_burst: int = 8
    #: Users whose blocks the engine keeps in memory for the real-time path.
    max_cached_blocks: int = 100_000
