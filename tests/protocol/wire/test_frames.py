"""Every frame type survives encode -> decode and a trip through two connections."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import appliance.protocol.wire
from appliance.protocol.wire import (
    Ack,
    Close,
    CloseCode,
    Event,
    Flag,
    FrameType,
    Hello,
    LocalWireError,
    Message,
    Ping,
    Pong,
    ReadReport,
    RemoteWireError,
    ReportAck,
    Role,
    State,
    Status,
    StatusReport,
    Welcome,
    WireConnection,
    encode,
)
from appliance.protocol.wire.constants import WelcomeField
from appliance.protocol.wire.extensions import EXTENSION_FRAMES
from appliance.protocol.wire.frames import (
    HEADER,
    HEADER_SIZE,
    PRIORITY_MAX,
    STORED_U64_MAX,
    TYPE_MAX,
    decode_body,
    decode_message,
)
from tests.protocol.wire.helpers import (
    HELLO,
    SAMPLES,
    WELCOME,
    acks,
    client_events,
    closes,
    hellos,
    messages,
    open_pair,
    pings,
    pongs,
    read_reports,
    report_acks,
    server_events,
    status_reports,
    welcomes,
)

any_event = st.one_of(messages, status_reports, hellos, welcomes, acks, read_reports,
                      report_acks, pings, pongs, closes)
FRAME_TYPE = {type(e): t for t, e in SAMPLES.items()}


# --- encode -> decode ---------------------------------------------------------------


@settings(max_examples=400)
@given(any_event)
def test_encode_decode_round_trip(event: Event) -> None:
    frame = encode(event)
    length, ftype = HEADER.unpack_from(frame)
    assert length == len(frame) - HEADER_SIZE
    assert ftype == FRAME_TYPE[type(event)]
    assert decode_body(ftype, frame[HEADER_SIZE:]) == event
    if isinstance(event, Message):
        assert decode_message(frame, HEADER_SIZE, len(frame)) == event


def test_samples_cover_every_frame_type() -> None:
    # Extension frames (PROTOCOL.md §8) are sampled once their family registers them.
    assert set(SAMPLES) == {t for t in FrameType if t < 0x40 or t in EXTENSION_FRAMES}


# --- through a client and a server connection -------------------------------------------


@settings(max_examples=100)
@given(hellos, welcomes)
def test_handshake_round_trip(hello: Hello, welcome: Welcome) -> None:
    open_pair(hello, welcome)  # asserts both events arrive equal and both ends are OPEN


@settings(max_examples=300)
@given(st.one_of(client_events, closes))
def test_client_to_server_round_trip(event: Event) -> None:
    client, server = open_pair()
    assert server.receive_data(client.send(event)) == [event]
    expected = State.CLOSED if isinstance(event, Close) else State.OPEN
    assert client.state is server.state is expected
    assert server.buffered == 0


@settings(max_examples=300)
@given(st.one_of(server_events, closes))
def test_server_to_client_round_trip(event: Event) -> None:
    client, server = open_pair()
    assert client.receive_data(server.send(event)) == [event]
    expected = State.CLOSED if isinstance(event, Close) else State.OPEN
    assert client.state is server.state is expected
    assert client.buffered == 0


@settings(max_examples=100)
@given(st.lists(client_events, max_size=20), st.lists(server_events, max_size=20))
def test_many_frames_in_one_buffer(up: list[Event], down: list[Event]) -> None:
    client, server = open_pair()
    assert server.receive_data(b"".join(client.send(e) for e in up)) == up
    assert client.receive_data(b"".join(server.send(e) for e in down)) == down


def test_hello_carries_the_preface() -> None:
    data = WireConnection(Role.CLIENT).send(HELLO)
    assert data.startswith(b"\x89TDNG\r\n\x01")
    assert data[8:] == encode(HELLO)


# --- fields that do not fit their wire width -----------------------------------------------

TOO_WIDE: list[Event] = [
    Message(2**64, b"bob", b""),
    Message(-1, b"bob", b""),
    Message(1, b"bob", b"", refid=2**64),
    Message(1, b"bob", b"", seq=2**64),
    Message(1, b"bob", b"", timestamp_ms=2**64),
    Message(1, b"bob", b"", group_id=2**64),
    Message(1, b"bob", b"", expiry_s=2**32),
    Message(1, b"bob", b"", type=2**32),
    Message(1, b"bob", b"", flags=2**32),
    Message(1, b"bob", b"", priority=256),
    Message(1, b"x" * 256, b""),
    StatusReport(2**64, 1),
    StatusReport(1, 256),
    StatusReport(1, 1, report_seq=-1),
    StatusReport(1, 1, peer=b"x" * 256),
    Hello(token=b"t", device_id=b"d" * 256),
    Hello(token=b"t" * 65536, device_id=b"d"),
    Hello(token=b"t", device_id=b"d", keepalive_s=65536),
    Hello(token=b"t", device_id=b"d", client_flags=2**32),
    Welcome(address=b"a" * 256, server_time_ms=0, keepalive_s=0, max_frame_bytes=0),
    Welcome(address=b"a", server_time_ms=2**64, keepalive_s=0, max_frame_bytes=0),
    Welcome(address=b"a", server_time_ms=0, keepalive_s=2**32, max_frame_bytes=0),
    Ack((2**64,)),
    Ack((1, -1)),
    Ack((0,) * 65536),
    ReadReport(b"bob", 2**64, ()),
    ReadReport(b"b" * 256, 0, ()),
    ReadReport(b"bob", 0, (2**64,)),
    ReadReport(b"bob", 0, (0,) * 65536),
    ReportAck(2**64),
    Ping(2**64),
    Pong(-1),
    Close(65536, ""),
    Close(-1, ""),
    Close(0, "\ud800"),  # a lone surrogate has no UTF-8 encoding
]


@pytest.mark.parametrize("event", TOO_WIDE, ids=repr)
def test_out_of_range_field_is_a_local_error(event: Event) -> None:
    with pytest.raises(LocalWireError):
        encode(event)


@pytest.mark.parametrize("event", [e for e in TOO_WIDE if isinstance(e, Hello | Close)], ids=repr)
def test_failed_send_leaves_the_state_alone(event: Event) -> None:
    client = WireConnection(Role.CLIENT)
    with pytest.raises(LocalWireError):
        client.send(event)
    assert client.state is State.IDLE


@pytest.mark.parametrize("event", [e for e in TOO_WIDE if isinstance(e, Message | Ack | Ping)],
                         ids=repr)
def test_failed_send_when_open_leaves_the_connection_usable(event: Event) -> None:
    client, server = open_pair()
    with pytest.raises(LocalWireError):
        client.send(event)
    assert client.state is State.OPEN
    assert server.receive_data(client.send(Ping(7))) == [Ping(7)]


def test_largest_values_fit() -> None:
    top = 2**64 - 1
    m = Message(top, b"a" * 255, b"p", group_id=STORED_U64_MAX, refid=top, seq=STORED_U64_MAX,
                timestamp_ms=top, expiry_s=2**32 - 1, type=TYPE_MAX, flags=2**32 - 1,
                priority=PRIORITY_MAX)
    frame = encode(m)
    assert decode_message(frame, HEADER_SIZE, len(frame)) == m
    h = Hello(token=b"t" * 65535, device_id=b"d" * 255, keepalive_s=65535, client_flags=2**32 - 1)
    assert decode_body(FrameType.HELLO, encode(h)[HEADER_SIZE:]) == h
    a = Ack((STORED_U64_MAX,) * 65535)
    assert decode_body(FrameType.ACK, encode(a)[HEADER_SIZE:]) == a
    r = ReadReport(b"bob", STORED_U64_MAX, (top,))  # message ids use the whole u64
    assert decode_body(FrameType.READ, encode(r)[HEADER_SIZE:]) == r
    assert decode_body(FrameType.REPORT_ACK, encode(ReportAck(STORED_U64_MAX))[HEADER_SIZE:]) \
        == ReportAck(STORED_U64_MAX)


# --- fields that fit their wire width but not their range (issue 12) -----------------------

_MSG = struct.Struct(">QQQQIIIBQB")


def _message_body(*, group_id: int = 0, mtype: int = 0, priority: int = 0) -> bytes:
    return _MSG.pack(1, 0, 0, 0, 60, mtype, 3, priority, group_id, 3) + b"bobhi"


#: (frame type, body, the words the close reason must contain)
NARROW: list[tuple[int, bytes, str]] = [
    (FrameType.MESSAGE, _message_body(priority=16), "MESSAGE priority 16 out of range 0..15"),
    (FrameType.MESSAGE, _message_body(priority=255), "MESSAGE priority 255"),
    (FrameType.MESSAGE, _message_body(group_id=2**63), f"MESSAGE group_id {2**63}"),
    (FrameType.MESSAGE, _message_body(group_id=2**64 - 1), "MESSAGE group_id"),
    (FrameType.MESSAGE, _message_body(mtype=2**31), f"MESSAGE type {2**31}"),
    (FrameType.ACK, struct.pack(">HQQ", 2, 1, 2**63), f"ACK seq {2**63}"),
    (FrameType.READ, struct.pack(">QB", 2**63, 3) + b"bob" + struct.pack(">HQ", 1, 5),
     "READ group_id"),
    (FrameType.REPORT_ACK, struct.pack(">Q", 2**64 - 1), "REPORT_ACK report_seq"),
]


@pytest.mark.parametrize(("ftype", "body", "reason"), NARROW, ids=[r for _, _, r in NARROW])
def test_a_value_out_of_its_range_is_a_protocol_error_naming_the_field(
        ftype: int, body: bytes, reason: str) -> None:
    _, server = open_pair()
    with pytest.raises(RemoteWireError) as refused:
        server.receive_data(struct.pack(">IB", len(body), ftype) + body)
    assert refused.value.close_code == CloseCode.PROTOCOL_ERROR
    assert reason in str(refused.value)
    assert server.state is State.ERROR


NARROW_EVENTS: list[Event] = [
    Message(1, b"bob", b"", priority=16),
    Message(1, b"bob", b"", priority=-1),
    Message(1, b"bob", b"", group_id=2**63),
    Message(1, b"bob", b"", type=2**31),
    Ack((1, 2**63)),
    ReadReport(b"bob", 2**63, ()),
    ReportAck(2**63),
]


@pytest.mark.parametrize("event", NARROW_EVENTS, ids=repr)
def test_the_encoder_refuses_a_value_out_of_its_range(event: Event) -> None:
    client, _ = open_pair()
    with pytest.raises(LocalWireError, match="out of range"):
        client.send(event)
    assert client.state is State.OPEN


# --- PROTOCOL.md says what the code does -------------------------------------------------

PROTOCOL_MD = Path(appliance.protocol.wire.__file__).with_name("PROTOCOL.md").read_text()


def _section(number: int) -> str:
    return PROTOCOL_MD.split(f"\n## {number}. ")[1].split("\n## ")[0]


def _codes(text: str) -> dict[str, int]:
    rows = re.findall(r"^\| `?(0x[0-9a-f]+|\d+)`? \| ([A-Z_]+) \|", text, re.MULTILINE)
    return {name: int(value, 0) for value, name in rows}


def test_protocol_md_worked_example_is_what_the_encoder_produces() -> None:
    blocks = re.findall(r"```\n((?:[0-9a-f]{4}  .*\n)+)```", _section(7))
    dumps = [bytes.fromhex("".join(line[6:53] for line in b.splitlines())) for b in blocks]
    client = WireConnection(Role.CLIENT)
    hello = client.send(Hello(token=b"tok-8f3a", device_id=b"phone-1", keepalive_s=30))
    client.receive_data(encode(WELCOME))
    message = client.send(Message(1001, b"bob", b"Hello, Bob!", expiry_s=86400, priority=4))
    assert dumps == [hello, message]


def test_protocol_md_lists_every_code() -> None:
    assert _codes(_section(3)) == {**{t.name: t.value for t in FrameType},
                                   **{f.name: f.value for f in WelcomeField}}
    assert _codes(_section(4)) == {s.name: s.value for s in Status}
    assert _codes(_section(5)) == {c.name: c.value for c in CloseCode}
    flags = re.findall(r"^  \| \d+ \| `(0x[0-9a-f]+)` \| ([A-Z_]+) \|", _section(3), re.MULTILINE)
    assert {name: int(value, 0) for value, name in flags} == {
        name: getattr(Flag, name) for name in vars(Flag)
        if name.isupper() and name not in ("DEFAULT", "CLIENT_MASK")}
