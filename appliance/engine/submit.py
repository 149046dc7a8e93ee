"""Messages from senders that are not connections (`Engine.submit`).

The app's backend over REST today; webhooks, bots and the cluster later.  A
submitted message goes through exactly what a device's goes through
(validation, dedupe by (sender, id), group commit, fan-out, receipts); its
answer comes back typed through `SubmitLink`, never as encoded bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from appliance.config.limits import EngineLimits
from appliance.engine.ports import FrameLink, Pending, Scheduler
from appliance.engine.quotas import UNLIMITED_CREDIT
from appliance.engine.session import Session
from appliance.errors import BusyError, TooManyRequestsError
from appliance.protocol.wire import Flag, Message, Status, Welcome
from appliance.protocol.wire.errors import LocalWireError
from appliance.protocol.wire.frames import encode_message

#: What a refused submission is told to wait: a commit answers in milliseconds,
#: so room comes back within a second unless the store is stuck.
RETRY_AFTER_S = 1.0


@dataclass(frozen=True, slots=True)
class Sender:
    """Who submits: a user of an app (the app itself is its reserved user ``@app``)."""

    app_id: int
    user_id: int
    address: bytes
    #: Held to the per-user send rate (``limits.send_rate_per_s``), as a device
    #: is; the app's backend is not (the HTTP limits hold it).
    rate_limited: bool = False
    #: The server speaks (a group's announcements): its messages carry `Flag.SYSTEM`,
    #: which no device can set, and reach a group's members without membership.
    system: bool = False


@dataclass(frozen=True, slots=True)
class Submitted:
    """The answer to one submitted message (SENT or why not)."""

    msg_id: int
    status: Status
    timestamp_ms: int = 0

    @property
    def ok(self) -> bool:
        """Whether the message was accepted (SENT, stored or relayed)."""
        return self.status < Status.FAILED


def checked_counts(submissions: Sequence[tuple[Sender, Sequence[Message]]]) -> dict[int, int]:
    """How many messages `submissions` hold per app, each one checked first.

    `Engine.submit` is where these messages enter: no codec checked them (a
    group id of 2**64 reached the writer, whose OverflowError failed its commit).

    Raises:
        ValueError: an id is 0 or given twice within one sender's messages, or
            a field is out of its range (PROTOCOL.md §3.3).
    """
    counts: dict[int, int] = {}
    for sender, messages in submissions:
        ids = [m.id for m in messages]
        if 0 in ids or len(set(ids)) != len(ids):
            raise ValueError("every submitted message needs an id of its own")
        for m in messages:
            try:
                encode_message(m)  # the ranges and widths a device's MESSAGE is held to
            except LocalWireError as exc:
                raise ValueError(f"message {m.id}: {exc}") from None
        if not sender.system:  # the server's own announcements are not the app's
            counts[sender.app_id] = counts.get(sender.app_id, 0) + len(ids)
    return counts


def submit_all(submissions: Sequence[tuple[Sender, Sequence[Message]]], budget: SubmitBudget,
               scheduler: Scheduler, on_message: Callable[[Session, Message, int], None]
               ) -> list[Pending[list[Submitted]]]:
    """`Engine.submit_many`: each sender's messages go to `on_message` through a
    session of their own (never registered), all in this turn.

    Raises:
        ValueError: see `checked_counts`.
        BusyError, TooManyRequestsError: see `SubmitBudget.take`.
    """
    budget.take(checked_counts(submissions))
    futures = []
    for sender, messages in submissions:
        future: Pending[list[Submitted]] = scheduler.future()
        futures.append(future)
        if not messages:
            future.set_result([])
            continue
        link = SubmitLink([m.id for m in messages], future,
                          None if sender.system else budget, sender.app_id)
        session = Session(link, sender.app_id, sender.user_id, sender.address, b"", 0, 0)
        if not sender.rate_limited:
            session.send_credit = UNLIMITED_CREDIT
        server_flags = Flag.SYSTEM if sender.system else 0
        for m in messages:
            on_message(session, m, server_flags)
    return futures


class SubmitBudget:
    """Messages submitted and not answered yet: the whole server's, and each app's.

    A device's unanswered messages pause its connection (`max_unconfirmed`);
    a submission has no connection to pause, and nothing else bounded what
    the engine holds for it (every message, its payload and its answer wait
    in the open batch, and one commit takes them all).  A submission that
    would pass ``limits.max_submitted`` or ``limits.max_app_submitted`` is
    refused whole, before anything of it is batched.  Room comes back as
    messages are answered (`SubmitLink.status`), not when a caller stops
    waiting: until its answer, a message is in the engine.
    """

    __slots__ = ("_apps", "limits", "refusals", "total")

    def __init__(self, limits: EngineLimits, refusals: dict[str, int] | None = None) -> None:
        self.limits = limits
        self.total = 0
        self._apps: dict[int, int] = {}
        #: Refusals by reason (the engine's, for the operator's statistics).
        self.refusals: dict[str, int] = {} if refusals is None else refusals

    def take(self, counts: Mapping[int, int]) -> None:
        """Reserve room for `counts` (app id -> messages), all or nothing.

        Raises:
            BusyError: the server holds `max_submitted` unanswered messages.
            TooManyRequestsError: this app holds `max_app_submitted` of them.
        """
        self.check(counts)
        self.total += sum(counts.values())
        apps = self._apps
        for app_id, count in counts.items():
            apps[app_id] = apps.get(app_id, 0) + count

    def check(self, counts: Mapping[int, int]) -> None:
        """Whether `take(counts)` would pass now, reserving nothing.

        Raises:
            BusyError, TooManyRequestsError: see `take`.
        """
        limits = self.limits
        wanted = sum(counts.values())
        # One larger than a limit could never fit: it is taken when nothing else
        # is held (REST arrays are smaller than either limit: see config/load.py).
        if self.total + wanted > limits.max_submitted and self.total:
            self.refusals["submitted_busy"] = self.refusals.get("submitted_busy", 0) + 1
            raise BusyError(f"the server has {self.total} submitted messages waiting for their"
                            f" commit (at most {limits.max_submitted})",
                            retry_after_s=RETRY_AFTER_S)
        apps = self._apps
        for app_id, count in counts.items():
            if apps.get(app_id, 0) + count > limits.max_app_submitted and apps.get(app_id):
                self.refusals["submitted_app"] = self.refusals.get("submitted_app", 0) + 1
                raise TooManyRequestsError(
                    f"this app has {apps.get(app_id, 0)} submitted messages waiting for"
                    f" their commit (at most {limits.max_app_submitted})",
                    retry_after_s=RETRY_AFTER_S)

    def give(self, app_id: int, count: int = 1) -> None:
        """`count` messages of `app_id` were answered (or room taken for them is not used)."""
        self.total -= count
        left = self._apps[app_id] - count
        if left:
            self._apps[app_id] = left
        else:
            del self._apps[app_id]


class SubmitLink(FrameLink):
    """The `Link` of a submission: it only listens for its messages' answers.

    Ids are unique within one submission (`Engine.submit` checks), so an
    answer finds its message by id.  The session is never registered, so
    nothing is ever delivered to it.  Each first answer gives its room back
    to the `SubmitBudget` the submission was taken from.
    """

    __slots__ = ("_app_id", "_budget", "_index", "_left", "_results", "future")

    open = True

    def __init__(self, ids: list[int], future: Pending[list[Submitted]],
                 budget: SubmitBudget | None = None, app_id: int = 0) -> None:
        self._index = {msg_id: i for i, msg_id in enumerate(ids)}
        self._results: list[Submitted | None] = [None] * len(ids)
        self._left = len(ids)
        self.future = future
        self._budget = budget
        self._app_id = app_id

    def write(self, data: bytes) -> None:
        """Nothing is written to a submission but its answers (`status`)."""

    def status(self, msg_id: int, status: int, timestamp_ms: int = 0, report_seq: int = 0,
               group_id: int = 0, peer: bytes = b"") -> None:
        """An answer: the future resolves once every message has one."""
        i = self._index.get(msg_id)
        if i is None or self._results[i] is not None or report_seq:
            return
        self._results[i] = Submitted(msg_id, Status(status), timestamp_ms)
        self._left -= 1
        if self._budget is not None:
            self._budget.give(self._app_id)
        if not self._left and not self.future.done():
            self.future.set_result(self._results)  # type: ignore[arg-type]  # all filled

    def welcome(self, welcome: Welcome) -> None:
        """Never called: a submission is not opened with a HELLO."""

    def close(self, code: int, reason: str) -> None:
        """Nothing to close."""

    def pause_reading(self) -> None:
        """Nothing to pause: a submission's size is bounded by its caller."""

    def resume_reading(self) -> None:
        """Nothing to resume."""
