"""A realistic conversation parses the same however TCP happens to split it."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from appliance.protocol.wire import (
    Ack,
    Close,
    CloseCode,
    Event,
    Flag,
    Message,
    Ping,
    Pong,
    ReadReport,
    ReportAck,
    Role,
    State,
    Status,
    StatusReport,
    WireConnection,
)
from appliance.protocol.wire.frames import PRIORITY_MAX, TYPE_MAX
from tests.protocol.wire.helpers import HELLO, WELCOME, cut, feed, stream

TOP = 2**64 - 1

#: What a client sends once OPEN: 14 frames after the preface and HELLO.
CLIENT_SESSION: list[Event] = [
    Message(1001, b"bob", b"hello bob", expiry_s=86400),
    Message(1002, b"", b"hello team", group_id=7, priority=3),
    Message(0, b"bob", b"typing...", expiry_s=0, flags=Flag.TRANSIENT),
    Ack((501, 502, 503)),
    ReadReport(b"bob", 0, (2001, 2002)),
    ReportAck(44),
    Ping(1),
    Message(1003, b"carol", bytes(range(256)) * 12, refid=1001, type=9,
            flags=Flag.DEFAULT | Flag.ENCRYPTED | Flag.MODIFY, priority=15),
    Pong(77),
    Message(TOP, b"d" * 64, b"", refid=TOP, seq=TOP, timestamp_ms=TOP, expiry_s=2**32 - 1,
            type=TYPE_MAX, flags=0xFFFF, priority=PRIORITY_MAX, group_id=0),
    Ack(()),
    ReadReport(b"dave", 7, (3001,)),
    Message(1004, b"bob", b""),
    Close(CloseCode.NORMAL, "bye \N{WAVING HAND SIGN}"),
]

#: What a server sends: WELCOME, then 10 frames.
SERVER_SESSION: list[Event] = [
    WELCOME,
    Message(2001, b"bob", b"hi alice", seq=9, timestamp_ms=1_767_225_601_000, expiry_s=604_799),
    Message(1001, b"carol", b"sent from my laptop", seq=10, timestamp_ms=1_767_225_601_500,
            flags=Flag.DEFAULT | Flag.OUTGOING_COPY),
    StatusReport(1001, Status.SENT, timestamp_ms=1_767_225_602_000),
    StatusReport(1001, Status.DELIVERED, report_seq=45, timestamp_ms=1_767_225_603_000,
                 peer=b"bob"),
    Ping(5),
    Pong(1),
    Message(0, b"bob", b"typing...", expiry_s=0, flags=Flag.TRANSIENT),
    StatusReport(1002, Status.READ, report_seq=46, group_id=7, peer=b"dave"),
    StatusReport(1005, Status.INVALID_DEST),
    Close(CloseCode.GOING_AWAY, "server shutting down"),
]


def _streams() -> tuple[bytes, bytes, bytes]:
    """(client HELLO with preface, client bytes after WELCOME, server bytes)."""
    client = WireConnection(Role.CLIENT)
    server = WireConnection(Role.SERVER)
    handshake = client.send(HELLO)
    server.receive_data(handshake)
    welcome = server.send(WELCOME)
    client.receive_data(welcome)
    return handshake, stream(client, CLIENT_SESSION), welcome + stream(server, SERVER_SESSION[1:])


HANDSHAKE, SESSION, DOWNSTREAM = _streams()
UPSTREAM = HANDSHAKE + SESSION
UP_EVENTS: list[Event] = [HELLO, *CLIENT_SESSION]


def _up(chunks: list[bytes]) -> list[Event]:
    """Feed client bytes to a server; the HELLO boundary is always a chunk boundary.

    A client never sends past its HELLO before the WELCOME arrives, so no TCP
    segment it writes can straddle that boundary.
    """
    server = WireConnection(Role.SERVER)
    events = feed(server, chunks)
    assert server.state is State.CLOSED
    assert server.buffered == 0
    return events


def _down(chunks: list[bytes]) -> list[Event]:
    client = WireConnection(Role.CLIENT)
    client.send(HELLO)
    events: list[Event] = []
    for chunk in chunks:
        events += client.receive_data(chunk)
    assert client.state is State.CLOSED
    assert client.buffered == 0
    return events


def test_the_fixture_is_realistic() -> None:
    assert len(UP_EVENTS) >= 15
    assert len(SERVER_SESSION) >= 10
    assert _up([HANDSHAKE, SESSION]) == UP_EVENTS
    assert _down([DOWNSTREAM]) == SERVER_SESSION


def test_upstream_split_at_every_byte() -> None:
    for k in range(len(UPSTREAM) + 1):
        assert _up(cut(UPSTREAM, (k, len(HANDSHAKE)))) == UP_EVENTS, f"split at {k}"


def test_downstream_split_at_every_byte() -> None:
    for k in range(len(DOWNSTREAM) + 1):
        assert _down(cut(DOWNSTREAM, (k,))) == SERVER_SESSION, f"split at {k}"


def test_one_byte_pieces() -> None:
    assert _up([UPSTREAM[i:i + 1] for i in range(len(UPSTREAM))]) == UP_EVENTS
    assert _down([DOWNSTREAM[i:i + 1] for i in range(len(DOWNSTREAM))]) == SERVER_SESSION


def test_events_arrive_as_soon_as_their_last_byte_does() -> None:
    client = WireConnection(Role.CLIENT)
    client.send(HELLO)
    seen: list[Event] = []
    pending = 0
    for i in range(len(DOWNSTREAM)):
        new = client.receive_data(DOWNSTREAM[i:i + 1])
        seen += new
        pending = 0 if new else pending + 1
        assert len(new) <= 1
        assert client.buffered == pending
    assert seen == SERVER_SESSION


@settings(max_examples=200)
@given(st.lists(st.integers(0, len(UPSTREAM)), max_size=40),
       st.lists(st.integers(0, len(DOWNSTREAM)), max_size=40))
def test_random_chunkings(up_cuts: list[int], down_cuts: list[int]) -> None:
    assert _up(cut(UPSTREAM, [*up_cuts, len(HANDSHAKE)])) == UP_EVENTS
    assert _down(cut(DOWNSTREAM, down_cuts)) == SERVER_SESSION


def test_empty_reads_are_harmless() -> None:
    chunks = [b"", *cut(UPSTREAM, (3, len(HANDSHAKE), len(HANDSHAKE) + 60)), b""]
    assert _up([c for piece in chunks for c in (piece, b"")]) == UP_EVENTS

