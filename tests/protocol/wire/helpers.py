"""Strategies, sample events and in-memory connection pairs for the wire tests.

Everything here is pure: two `WireConnection`s talk by handing each other the
bytes that `send` returns, as in h11's `ConnectionPair` (no loop, no socket).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

from hypothesis import strategies as st

from appliance.protocol.wire import (
    Ack,
    Close,
    CloseCode,
    Event,
    FrameType,
    Hello,
    Message,
    Ping,
    Pong,
    ReadReport,
    ReportAck,
    Role,
    State,
    Status,
    StatusReport,
    Welcome,
    WireConnection,
)
from appliance.protocol.wire.frames import HEADER, PRIORITY_MAX, STORED_U64_MAX, TYPE_MAX
from appliance.protocol.wire.groups import (
    GroupManage,
    GroupOp,
    GroupResult,
    GroupResultCode,
    Perm,
)

EVENT_TYPES = (Message, StatusReport, Hello, Welcome, Ack, ReadReport, ReportAck, Ping, Pong,
               Close)

# --- field strategies: the full range of each wire width ------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
u64 = st.integers(0, 0xFFFF_FFFF_FFFF_FFFF)
#: Narrower ranges than the wire width (PROTOCOL.md "Value ranges").
stored_u64 = st.integers(0, STORED_U64_MAX)
priorities = st.integers(0, PRIORITY_MAX)
types = st.integers(0, TYPE_MAX)
#: SPEC M1 addresses are 1-64 bytes; the codec itself also carries 0.
addresses = st.binary(max_size=64)
#: Fields with a u8 length prefix whose only limit is the wire width.
short_bytes = st.binary(max_size=255)

messages = st.builds(
    Message, id=u64, peer=addresses, payload=st.binary(max_size=2048), group_id=stored_u64,
    refid=u64, seq=stored_u64, timestamp_ms=u64, expiry_s=u32, type=types, flags=u32,
    priority=priorities)
status_reports = st.builds(StatusReport, id=u64, status=u8, report_seq=u64,
                           timestamp_ms=u64, group_id=u64, peer=addresses)
hellos = st.builds(Hello, token=st.binary(max_size=600), device_id=short_bytes,
                   keepalive_s=u16, client_flags=u32)
welcomes = st.builds(Welcome, address=short_bytes, server_time_ms=u64, keepalive_s=u32,
                     max_frame_bytes=u32,
                     server_version=st.binary(max_size=64).filter(lambda v: b"\0" not in v),
                     info=st.none() | st.dictionaries(st.integers(0, 255), u32, max_size=8))
acks = st.builds(Ack, seqs=st.lists(stored_u64, max_size=50).map(tuple))
read_reports = st.builds(ReadReport, peer=addresses, group_id=stored_u64,
                         ids=st.lists(u64, max_size=50).map(tuple))
report_acks = st.builds(ReportAck, report_seq=stored_u64)
pings = st.builds(Ping, nonce=u64)
pongs = st.builds(Pong, nonce=u64)
closes = st.builds(Close, code=u16, reason=st.text(max_size=80))

#: What a client may send once OPEN (CLOSE aside), and what a server may.
client_events = st.one_of(messages, acks, read_reports, report_acks, pings, pongs)
server_events = st.one_of(messages, status_reports, pings, pongs)

# --- fixed events -------------------------------------------------------------------------

HELLO = Hello(token=b"c2VjcmV0LXRva2Vu", device_id=b"phone-1", keepalive_s=30)
WELCOME = Welcome(address=b"alice@example.org", server_time_ms=1_767_225_600_000,
                  keepalive_s=60, max_frame_bytes=64 * 1024 + 512, server_version=b"tidings 0.1")

#: One minimal valid event per frame type.
SAMPLES: dict[FrameType, Any] = {
    FrameType.HELLO: HELLO,
    FrameType.WELCOME: WELCOME,
    FrameType.MESSAGE: Message(1, b"bob", b"hi"),
    FrameType.ACK: Ack((1,)),
    FrameType.STATUS: StatusReport(1, Status.SENT),
    FrameType.READ: ReadReport(b"bob", 0, (1,)),
    FrameType.REPORT_ACK: ReportAck(1),
    FrameType.PING: Ping(1),
    FrameType.PONG: Pong(1),
    FrameType.CLOSE: Close(CloseCode.NORMAL, "bye"),
    # Extension frames (PROTOCOL.md §8), encoded by `encode_extension`.
    FrameType.GROUP_MANAGE: GroupManage(1, GroupOp.ADD, 7, members=((b"bob", Perm.DEFAULT),)),
    FrameType.GROUP_RESULT: GroupResult(1, GroupResultCode.OK, 7, 3),
}

# --- connections ----------------------------------------------------------------------------


def open_pair(hello: Hello = HELLO, welcome: Welcome = WELCOME,
              ) -> tuple[WireConnection, WireConnection]:
    """A client and a server that completed HELLO / WELCOME: both OPEN."""
    client = WireConnection(Role.CLIENT)
    server = WireConnection(Role.SERVER)
    assert server.receive_data(client.send(hello)) == [hello]
    assert (client.state, server.state) == (State.AWAIT_WELCOME, State.AUTHENTICATING)
    assert client.receive_data(server.send(welcome)) == [welcome]
    assert client.state is State.OPEN
    assert server.state is State.OPEN
    return client, server


def feed(conn: WireConnection, chunks: Iterable[bytes]) -> list[Event]:
    """Feed `chunks` to `conn`, answering a HELLO with WELCOME as a server does."""
    events: list[Event] = []
    for chunk in chunks:
        events += conn.receive_data(chunk)
        if conn.state is State.AUTHENTICATING:
            conn.send(WELCOME)
    return events


def cut(data: bytes, points: Iterable[int]) -> list[bytes]:
    """Split `data` at every offset in `points` (out-of-range offsets are ignored)."""
    edges = sorted({0, len(data), *(p for p in points if 0 <= p <= len(data))})
    return [data[a:b] for a, b in pairwise(edges)]


def stream(conn: WireConnection, events: Sequence[Event]) -> bytes:
    """The bytes `conn` sends for `events`, in order."""
    return b"".join(conn.send(e) for e in events)


def encode_extension(event: Any) -> bytes:
    """The whole frame of an extension event (PROTOCOL.md §8), as a peer sends it."""
    body = event.encode_body()
    return HEADER.pack(len(body), event.FRAME_TYPE) + body
