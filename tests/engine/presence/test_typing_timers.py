"""Typing states end by themselves: one FIFO of deadlines, refreshes and stops respected."""

from __future__ import annotations

from appliance.engine.presence.typing_timers import TypingTimers

BOB = (0, b"bob")
TEAM = (7, b"")


def test_a_state_ends_after_the_timeout_unless_refreshed() -> None:
    timers = TypingTimers(timeout_s=5)
    timers.start(1, BOB, b"alice", (2,), now=0.0)
    timers.start(1, TEAM, b"alice", (2, 3), now=1.0)
    assert timers.next_deadline() == 5.0
    assert timers.expired(4.9) == []
    timers.start(1, BOB, b"alice", (2,), now=4.0)  # a refresh
    assert timers.expired(5.5) == []  # the old deadline comes up and is skipped
    ended = timers.expired(6.0)
    assert [(target, state.recipients) for target, state in ended] == [(TEAM, (2, 3))]
    assert [target for target, _ in timers.expired(9.0)] == [BOB]
    assert len(timers) == 0
    assert timers.next_deadline() is None


def test_stop_and_stop_all_end_states_at_once() -> None:
    timers = TypingTimers(timeout_s=5)
    timers.start(1, BOB, b"alice", (2,), now=0.0)
    timers.start(1, TEAM, b"alice", (2, 3), now=0.0)
    timers.start(4, BOB, b"dave", (2,), now=0.0)
    stopped = timers.stop(1, BOB)
    assert stopped is not None
    assert stopped.address == b"alice"
    assert timers.stop(1, BOB) is None
    assert [target for target, _ in timers.stop_all(1)] == [TEAM]
    assert timers.stop_all(1) == []
    assert [(t, s.address) for t, s in timers.expired(10.0)] == [(BOB, b"dave")]
