"""Typing states that end by themselves: one queue of deadlines for every typing user.

A TYPING lasts ``limits.typing_timeout_s`` unless refreshed (PROTOCOL.md
§8.2); then its recipients are told TYPING_STOPPED.  Every deadline is "now
plus the same timeout", so deadlines enter in order and a FIFO is the timer
wheel: `expired` pops from its head, and a refresh appends a new deadline
(the old one is skipped when it comes up).  One task serves them all
(`Presence.run`), never a task or a timer per typing user.

Bounded: a device sends at most ``limits.presence_burst`` plus
``limits.presence_rate_per_s`` a second of PRESENCE_SET frames, so the
states and the queue hold at most that rate times the timeout per device.
"""

from __future__ import annotations

from collections import deque

#: Where a user types: (group id, 0-length peer) or (0, peer address).
Target = tuple[int, bytes]


class Typing:
    """One user typing to one target."""

    __slots__ = ("address", "deadline", "recipients")

    def __init__(self, address: bytes, deadline: float, recipients: tuple[int, ...]) -> None:
        #: The typing user's address (what the recipients' entries name).
        self.address = address
        self.deadline = deadline
        #: The user ids told TYPING (they are told when it stops).
        self.recipients = recipients


class TypingTimers:
    """Who is typing where, until when."""

    __slots__ = ("_queue", "_states", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._states: dict[int, dict[Target, Typing]] = {}
        self._queue: deque[tuple[float, int, Target]] = deque()

    def start(self, user: int, target: Target, address: bytes, recipients: tuple[int, ...],
              now: float) -> None:
        """`user` types at `target` (again): it lasts `timeout_s` from `now`."""
        deadline = now + self.timeout_s
        states = self._states.get(user)
        if states is None:
            states = self._states[user] = {}
        states[target] = Typing(address, deadline, recipients)
        self._queue.append((deadline, user, target))

    def stop(self, user: int, target: Target) -> Typing | None:
        """`user` stopped typing at `target`; its state, None when it was not typing."""
        states = self._states.get(user)
        if states is None:
            return None
        found = states.pop(target, None)
        if not states:
            del self._states[user]
        return found

    def stop_all(self, user: int) -> list[tuple[Target, Typing]]:
        """`user` went offline: every target it typed at, with its state."""
        return list(self._states.pop(user, {}).items())

    def expired(self, now: float) -> list[tuple[Target, Typing]]:
        """The states whose deadline passed by `now`, forgotten."""
        out = []
        queue = self._queue
        while queue and queue[0][0] <= now:
            deadline, user, target = queue.popleft()
            states = self._states.get(user)
            state = None if states is None else states.get(target)
            if state is not None and state.deadline == deadline:  # not refreshed since
                out.append((target, self.stop(user, target) or state))
        return out

    def next_deadline(self) -> float | None:
        """When the next state may expire (None: nobody is typing)."""
        return self._queue[0][0] if self._queue else None

    def __len__(self) -> int:
        """How many users are typing somewhere."""
        return len(self._states)
