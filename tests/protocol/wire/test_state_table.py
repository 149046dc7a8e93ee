"""The tables in connection.py are the whole truth about what may go where.

Every (role, state, frame type) pair is tried both ways: pairs in `_RECV` /
`_SEND` must work and move to the listed state; every other pair must raise
RemoteWireError when received and LocalWireError when sent, and leave a
failed send without effect.
"""

from __future__ import annotations

import itertools

import pytest

from appliance.protocol.wire import (
    PREFACE,
    CloseCode,
    FrameType,
    LocalWireError,
    RemoteWireError,
    Role,
    State,
    WireConnection,
    encode,
)
from appliance.protocol.wire.connection import _RECV, _SEND
from tests.protocol.wire.helpers import HELLO, SAMPLES, WELCOME

#: States each role actually passes through; the others are set by hand.
REACHABLE = {
    Role.CLIENT: (State.IDLE, State.AWAIT_WELCOME, State.OPEN, State.CLOSED, State.ERROR),
    Role.SERVER: (State.AWAIT_PREFACE, State.AWAIT_HELLO, State.AUTHENTICATING, State.OPEN,
                  State.CLOSED, State.ERROR),
}
# Extension frames (PROTOCOL.md §8) have their own rule (OPEN only, one direction):
# tests/protocol/wire/test_extensions.py.
BASE_FRAMES = [t for t in FrameType if t < 0x40]
COMBOS = list(itertools.product(Role, State, BASE_FRAMES))


def _ids(combo: tuple[Role, State, FrameType]) -> str:
    role, state, ftype = combo
    return f"{role.value}-{state.value}-{ftype.name}"


def connection(role: Role, state: State) -> WireConnection:
    """A connection of `role` in `state`, reached by real traffic where possible."""
    conn = WireConnection(role)
    if state not in REACHABLE[role]:
        conn.state = state  # unreachable for this role: still governed by the tables
        return conn
    if state is State.ERROR:
        with pytest.raises(RemoteWireError):
            conn.receive_data(b"\xff" * 16)
    elif state is State.CLOSED:
        conn.send(SAMPLES[FrameType.CLOSE])
    elif role is Role.CLIENT and state is not State.IDLE:
        conn.send(HELLO)
        if state is State.OPEN:
            conn.receive_data(encode(WELCOME))
    elif role is Role.SERVER and state is not State.AWAIT_PREFACE:
        conn.receive_data(PREFACE)
        if state is not State.AWAIT_HELLO:
            conn.receive_data(encode(HELLO))
        if state is State.OPEN:
            conn.send(WELCOME)
    assert conn.state is state
    return conn


@pytest.mark.parametrize("combo", [c for c in COMBOS if c not in _RECV], ids=_ids)
def test_receiving_outside_the_table_is_a_remote_error(
        combo: tuple[Role, State, FrameType]) -> None:
    role, state, ftype = combo
    conn = connection(role, state)
    with pytest.raises(RemoteWireError) as info:
        conn.receive_data(encode(SAMPLES[ftype]))
    assert conn.state is State.ERROR
    if state in (State.AWAIT_PREFACE, State.AWAIT_HELLO):
        assert info.value.close_code == CloseCode.HELLO_REQUIRED
    else:
        assert info.value.close_code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("combo", [c for c in COMBOS if c not in _SEND], ids=_ids)
def test_sending_outside_the_table_is_a_local_error(combo: tuple[Role, State, FrameType]) -> None:
    role, state, ftype = combo
    conn = connection(role, state)
    with pytest.raises(LocalWireError):
        conn.send(SAMPLES[ftype])
    assert conn.state is state


@pytest.mark.parametrize("combo", [c for c in COMBOS if c in _RECV], ids=_ids)
def test_receiving_inside_the_table_moves_to_its_next_state(
        combo: tuple[Role, State, FrameType]) -> None:
    role, state, ftype = combo
    conn = connection(role, state)
    assert conn.receive_data(encode(SAMPLES[ftype])) == [SAMPLES[ftype]]
    assert conn.state is _RECV[combo]


@pytest.mark.parametrize("combo", [c for c in COMBOS if c in _SEND], ids=_ids)
def test_sending_inside_the_table_moves_to_its_next_state(
        combo: tuple[Role, State, FrameType]) -> None:
    role, state, ftype = combo
    conn = connection(role, state)
    data = conn.send(SAMPLES[ftype])
    expected = encode(SAMPLES[ftype])
    assert data == (PREFACE + expected if ftype is FrameType.HELLO else expected)
    assert conn.state is _SEND[combo]


def test_sending_a_non_event_is_a_local_error() -> None:
    conn = connection(Role.CLIENT, State.OPEN)
    with pytest.raises(LocalWireError):
        conn.send(b"raw bytes")  # type: ignore[arg-type]  # what the test is about
    assert conn.state is State.OPEN


# --- the tables as PROTOCOL.md §3 states them, for the states each role can reach ---------

_C, _S = Role.CLIENT, Role.SERVER
_UP = {FrameType.MESSAGE, FrameType.ACK, FrameType.READ, FrameType.REPORT_ACK, FrameType.PING,
       FrameType.PONG}
_DOWN = {FrameType.MESSAGE, FrameType.STATUS, FrameType.PING, FrameType.PONG}
DOCUMENTED_RECV = {
    (_S, State.AWAIT_HELLO, FrameType.HELLO): State.AUTHENTICATING,
    (_S, State.AWAIT_HELLO, FrameType.CLOSE): State.CLOSED,
    (_S, State.AUTHENTICATING, FrameType.CLOSE): State.CLOSED,
    (_S, State.OPEN, FrameType.CLOSE): State.CLOSED,
    **{(_S, State.OPEN, t): State.OPEN for t in _UP},
    (_C, State.AWAIT_WELCOME, FrameType.WELCOME): State.OPEN,
    (_C, State.AWAIT_WELCOME, FrameType.CLOSE): State.CLOSED,
    (_C, State.OPEN, FrameType.CLOSE): State.CLOSED,
    **{(_C, State.OPEN, t): State.OPEN for t in _DOWN},
}
DOCUMENTED_SEND = {
    (_C, State.IDLE, FrameType.HELLO): State.AWAIT_WELCOME,
    **{(_C, State.OPEN, t): State.OPEN for t in _UP},
    (_S, State.AUTHENTICATING, FrameType.WELCOME): State.OPEN,
    **{(_S, State.OPEN, t): State.OPEN for t in _DOWN},
    **{(r, s, FrameType.CLOSE): State.CLOSED for r in Role for s in REACHABLE[r]
       if s not in (State.CLOSED, State.ERROR)},
}


def _reachable(table: dict[tuple[Role, State, int], State]) -> dict[tuple[Role, State, int], State]:
    return {k: v for k, v in table.items() if k[1] in REACHABLE[k[0]]}


def test_tables_match_the_specification() -> None:
    assert _reachable(_RECV) == DOCUMENTED_RECV
    assert _reachable(_SEND) == DOCUMENTED_SEND
