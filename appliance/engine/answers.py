"""The answer to a sender: one STATUS per message it sent (SPEC M3, PROTOCOL.md §3.5)."""

from __future__ import annotations

from appliance.engine.figures import EngineFigures
from appliance.engine.session import Session


class Answers:
    """Counts and sends the status each message is answered with."""

    __slots__ = ("_answered",)

    def __init__(self, figures: EngineFigures) -> None:
        self._answered = figures.answered  # one lookup less per message

    def answer(self, session: Session, msg_id: int, status: int, timestamp_ms: int = 0) -> None:
        """Answer message `msg_id` of `session` with `status` (id 0: no answer wanted)."""
        self._answered[status & 0xFF] += 1
        if msg_id:  # id 0 = the sender wants no status (SPEC M4)
            session.link.status(msg_id, status, timestamp_ms)
