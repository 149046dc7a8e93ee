"""Messages from senders that are not connections (`Engine.submit`).

The app's backend over REST today; webhooks, bots and the cluster later.  A
submitted message goes through exactly what a device's goes through
(validation, dedupe by (sender, id), group commit, fan-out, receipts); its
answer comes back typed through `SubmitLink`, never as encoded bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.engine.ports import FrameLink, Pending
from appliance.protocol.wire import Status, Welcome


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


class SubmitLink(FrameLink):
    """The `Link` of a submission: it only listens for its messages' answers.

    Ids are unique within one submission (`Engine.submit` checks), so an
    answer finds its message by id.  The session is never registered, so
    nothing is ever delivered to it.
    """

    __slots__ = ("_index", "_left", "_results", "future")

    open = True

    def __init__(self, ids: list[int], future: Pending[list[Submitted]]) -> None:
        self._index = {msg_id: i for i, msg_id in enumerate(ids)}
        self._results: list[Submitted | None] = [None] * len(ids)
        self._left = len(ids)
        self.future = future

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
