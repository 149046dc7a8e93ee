"""Hostile and broken input: the codec only ever raises RemoteWireError.

Whatever bytes arrive, in whatever pieces, `receive_data` either returns
well-formed events or raises `RemoteWireError`, after which the connection
is poisoned.  Anything else escaping (IndexError, struct.error, MemoryError,
UnicodeDecodeError...) is a codec bug.
"""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import given, settings, strategies as st

from appliance.protocol.wire import (
    PREFACE,
    Ack,
    Close,
    CloseCode,
    Event,
    FrameType,
    LocalWireError,
    Message,
    Ping,
    ReadReport,
    RemoteWireError,
    ReportAck,
    Role,
    State,
    WireConnection,
    encode,
)
from appliance.protocol.wire.frames import (
    HEADER,
    HEADER_SIZE,
    PRIORITY_MAX,
    STORED_U64_MAX,
    TYPE_MAX,
)
from tests.protocol.wire.helpers import (
    EVENT_TYPES,
    HELLO,
    SAMPLES,
    WELCOME,
    client_events,
    closes,
    cut,
    feed,
    open_pair,
    server_events,
    stream,
    u8,
    u32,
    u64,
)

HANDSHAKE = WireConnection(Role.CLIENT).send(HELLO)


def _server_after_preface() -> WireConnection:
    server = WireConnection(Role.SERVER)
    assert server.receive_data(PREFACE) == []
    assert server.state is State.AWAIT_HELLO
    return server


# --- strategies ----------------------------------------------------------------------


@st.composite
def sessions(draw: st.DrawFn, events: st.SearchStrategy[Event]) -> list[Event]:
    """What one end sends once OPEN, possibly ending with CLOSE."""
    session = draw(st.lists(events, min_size=1, max_size=8))
    if draw(st.booleans()):
        session.append(draw(closes))
    return session


def upstream(session: list[Event]) -> bytes:
    """The bytes a client sends after its preface and HELLO."""
    client, _ = open_pair()
    return stream(client, session)


def downstream(session: list[Event]) -> bytes:
    """The bytes a server sends after its WELCOME."""
    _, server = open_pair()
    return stream(server, session)


def mutate(data: st.DataObject, raw: bytes) -> bytes:
    """Flip bits, overwrite, insert, delete and truncate, 1 to 6 times."""
    draw = data.draw
    buf = bytearray(raw)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(("flip", "set", "insert", "delete", "truncate")))
        # sampled_from spreads positions evenly; integers() favours the first bytes
        pos = draw(st.sampled_from(range(len(buf)))) if buf else 0
        if kind == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and buf:
            buf[pos] = draw(u8)
        elif kind == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=9))
        elif kind == "delete":
            del buf[pos:pos + draw(st.integers(1, 9))]
        elif kind == "truncate":
            del buf[pos:]
    return bytes(buf)


def chunked(data: st.DataObject, raw: bytes, *always: int) -> list[bytes]:
    return cut(raw, [*data.draw(st.lists(st.integers(0, len(raw)), max_size=12)), *always])


# --- the property ----------------------------------------------------------------------------


def assert_poisoned(conn: WireConnection, exc: RemoteWireError) -> None:
    """After a RemoteWireError: ERROR state, a usable close code, every call raises."""
    assert conn.state is State.ERROR
    assert exc.close_code in set(CloseCode)
    assert isinstance(exc.reason, str)
    assert exc.reason
    encode(Close(exc.close_code, exc.reason[:200]))  # the transport can report it
    assert conn.buffered == 0
    for later in (b"", PREFACE, encode(Ping(1))):
        with pytest.raises(RemoteWireError):
            conn.receive_data(later)
        assert conn.state is State.ERROR


def survive(conn: WireConnection, chunks: list[bytes]) -> RemoteWireError | None:
    """Feed `chunks` as a peer would; only RemoteWireError may come out."""
    try:
        for chunk in chunks:
            events = conn.receive_data(chunk)
            assert all(isinstance(e, EVENT_TYPES) for e in events)
            if conn.state is State.AUTHENTICATING:
                conn.send(WELCOME)
    except RemoteWireError as exc:
        assert_poisoned(conn, exc)
        return exc
    return None


@settings(max_examples=300)
@given(sessions(client_events), st.data())
def test_mutated_client_sessions(session: list[Event], data: st.DataObject) -> None:
    _, server = open_pair()
    survive(server, chunked(data, mutate(data, upstream(session))))


@settings(max_examples=200)
@given(sessions(server_events), st.data())
def test_mutated_server_sessions(session: list[Event], data: st.DataObject) -> None:
    client, _ = open_pair()
    survive(client, chunked(data, mutate(data, downstream(session))))


@settings(max_examples=150)
@given(sessions(client_events), st.data())
def test_mutated_client_streams_from_the_first_byte(session: list[Event],
                                                    data: st.DataObject) -> None:
    raw = HANDSHAKE + upstream(session)
    bad = mutate(data, raw)
    survive(WireConnection(Role.SERVER), chunked(data, bad, len(HANDSHAKE)))


@settings(max_examples=150)
@given(sessions(server_events), st.data())
def test_mutated_server_streams_from_the_first_byte(session: list[Event],
                                                    data: st.DataObject) -> None:
    client = WireConnection(Role.CLIENT)
    client.send(HELLO)
    bad = mutate(data, encode(WELCOME) + downstream(session))
    survive(client, chunked(data, bad))


@settings(max_examples=150)
@given(sessions(client_events), st.data())
def test_truncated_streams_give_a_prefix_and_no_error(session: list[Event],
                                                      data: st.DataObject) -> None:
    raw = HANDSHAKE + upstream(session)
    events = [HELLO, *session]
    n = data.draw(st.integers(0, len(raw)))
    server = WireConnection(Role.SERVER)
    got = feed(server, chunked(data, raw[:n], len(HANDSHAKE)))
    assert got == events[:len(got)]
    assert n == len(raw) or len(got) < len(events)


@settings(max_examples=200)
@given(st.binary(max_size=300), st.data())
def test_random_bytes_at_any_stage(junk: bytes, data: st.DataObject) -> None:
    client, server = open_pair()
    for conn in (WireConnection(Role.SERVER), _server_after_preface(), server, client):
        survive(conn, chunked(data, junk))


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=64))
def test_anything_not_starting_with_the_magic_is_refused_at_once(junk: bytes) -> None:
    if junk[0] == PREFACE[0]:
        junk = b"G" + junk[1:]
    server = WireConnection(Role.SERVER)
    with pytest.raises(RemoteWireError) as info:
        server.receive_data(junk[:1])
    assert info.value.close_code == CloseCode.HELLO_REQUIRED
    assert_poisoned(server, info.value)


# --- frame size ------------------------------------------------------------------------------


def _in_state(state: State, max_frame_bytes: int = 1 << 20) -> WireConnection:
    server = WireConnection(Role.SERVER, max_frame_bytes=max_frame_bytes)
    if state is not State.AWAIT_PREFACE:
        server.receive_data(PREFACE)
    if state is State.OPEN:
        feed(server, [encode(HELLO)])
    assert server.state is state
    return server


@pytest.mark.parametrize("length", [2**31, 2**32 - 1, (1 << 20) + 1])
@pytest.mark.parametrize("state", [State.AWAIT_HELLO, State.OPEN])
def test_oversize_length_is_refused_from_the_header_alone(length: int, state: State) -> None:
    server = _in_state(state)
    header = HEADER.pack(length, FrameType.MESSAGE)
    for i in range(HEADER_SIZE - 1):
        assert server.receive_data(header[i:i + 1]) == []
    tracemalloc.start()
    try:
        with pytest.raises(RemoteWireError) as info:
            server.receive_data(header[-1:])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.close_code == CloseCode.FRAME_TOO_LARGE
    assert peak < 64 * 1024, f"{peak} bytes allocated for a refused frame"
    assert_poisoned(server, info.value)


def test_frame_size_limit_is_inclusive() -> None:
    limit = 100
    fits = Message(1, b"bob", b"x" * (limit - 54 - 3))
    too_big = Message(1, b"bob", b"x" * (limit - 54 - 2))
    server = _in_state(State.OPEN, max_frame_bytes=limit)
    assert server.receive_data(encode(fits)) == [fits]
    with pytest.raises(RemoteWireError) as info:
        server.receive_data(encode(too_big)[:HEADER_SIZE])
    assert info.value.close_code == CloseCode.FRAME_TOO_LARGE


def test_the_client_enforces_its_limit_too() -> None:
    client = WireConnection(Role.CLIENT, max_frame_bytes=10)
    client.send(HELLO)
    with pytest.raises(RemoteWireError) as info:
        client.receive_data(encode(WELCOME))
    assert info.value.close_code == CloseCode.FRAME_TOO_LARGE


# --- the handshake -------------------------------------------------------------------------


@pytest.mark.parametrize("event", [SAMPLES[t] for t in SAMPLES if t < 0x40
                                   and t not in (FrameType.HELLO, FrameType.CLOSE)], ids=repr)
def test_anything_but_hello_after_the_preface_is_hello_required(event: Event) -> None:
    server = _server_after_preface()
    with pytest.raises(RemoteWireError) as info:
        server.receive_data(encode(event))
    assert info.value.close_code == CloseCode.HELLO_REQUIRED
    assert_poisoned(server, info.value)


def test_message_instead_of_preface_is_hello_required() -> None:
    server = WireConnection(Role.SERVER)
    with pytest.raises(RemoteWireError) as info:
        server.receive_data(encode(Message(1, b"bob", b"hi")))
    assert info.value.close_code == CloseCode.HELLO_REQUIRED


@pytest.mark.parametrize("first", [
    b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n",
    b"POST /v1/users HTTP/1.1\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS ClientHello
    b"\x89PNG\r\n\x1a\n",
    b"\x89TDNX\r\n\x01",
    b"\x89TDNG\n\r\x01",
], ids=repr)
def test_other_protocols_are_refused_with_hello_required(first: bytes) -> None:
    server = WireConnection(Role.SERVER)
    with pytest.raises(RemoteWireError) as info:
        server.receive_data(first)
    assert info.value.close_code == CloseCode.HELLO_REQUIRED
    assert_poisoned(server, info.value)


@pytest.mark.parametrize("version", [0, 2, 0x7F, 0xFF])
def test_wrong_version_is_unsupported_version(version: int) -> None:
    server = WireConnection(Role.SERVER)
    preface = PREFACE[:-1] + bytes([version])
    for i in range(len(preface) - 1):
        assert server.receive_data(preface[i:i + 1]) == []
    assert server.state is State.AWAIT_PREFACE
    with pytest.raises(RemoteWireError) as info:
        server.receive_data(preface[-1:] + encode(HELLO))
    assert info.value.close_code == CloseCode.UNSUPPORTED_VERSION
    assert_poisoned(server, info.value)


def test_client_cannot_send_a_message_before_welcome() -> None:
    client = WireConnection(Role.CLIENT)
    with pytest.raises(LocalWireError):
        client.send(Message(1, b"bob", b"hi"))
    client.send(HELLO)
    with pytest.raises(LocalWireError):
        client.send(Message(1, b"bob", b"hi"))
    assert client.state is State.AWAIT_WELCOME


def test_server_cannot_send_a_message_before_welcome() -> None:
    server = WireConnection(Role.SERVER)
    server.receive_data(HANDSHAKE)
    assert server.state is State.AUTHENTICATING
    with pytest.raises(LocalWireError):
        server.send(Message(1, b"bob", b"hi"))


def test_frames_pipelined_behind_hello_are_refused() -> None:
    server = WireConnection(Role.SERVER)
    with pytest.raises(RemoteWireError) as info:
        server.receive_data(HANDSHAKE + encode(Ping(1)))
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


# --- malformed bodies ----------------------------------------------------------------------

#: Types whose body length follows exactly from its fields: any other length is an error.
EXACT = (FrameType.HELLO, FrameType.ACK, FrameType.STATUS, FrameType.READ, FrameType.REPORT_ACK,
         FrameType.PING, FrameType.PONG)


def _receiver(ftype: FrameType) -> WireConnection:
    """A connection in a state where a well-formed `ftype` frame is accepted."""
    if ftype is FrameType.HELLO:
        return _server_after_preface()
    if ftype is FrameType.WELCOME:
        client = WireConnection(Role.CLIENT)
        client.send(HELLO)
        return client
    client, server = open_pair()
    return client if ftype is FrameType.STATUS else server


def _frame(ftype: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), ftype) + body


@pytest.mark.parametrize("ftype", EXACT, ids=lambda t: t.name)
def test_wrong_body_length_is_a_protocol_error(ftype: FrameType) -> None:
    body = encode(SAMPLES[ftype])[HEADER_SIZE:]
    assert _receiver(ftype).receive_data(_frame(ftype, body)) == [SAMPLES[ftype]]
    for bad in [body[:n] for n in range(len(body))] + [body + b"\x00"]:
        conn = _receiver(ftype)
        with pytest.raises(RemoteWireError) as info:
            conn.receive_data(_frame(ftype, bad))
        assert info.value.close_code == CloseCode.PROTOCOL_ERROR, bad
        assert_poisoned(conn, info.value)


@pytest.mark.parametrize(("ftype", "body"), [
    (FrameType.MESSAGE, b"\x00" * 53),
    (FrameType.MESSAGE, b"\x00" * 53 + b"\x04bob"),  # address overruns the frame
    (FrameType.WELCOME, b"\x00" * 16),
    (FrameType.WELCOME, b"\x00" * 16 + b"\x05abc"),
    (FrameType.CLOSE, b""),
    (FrameType.CLOSE, b"\x00"),
    (FrameType.CLOSE, b"\x00\x00\xff\xfe"),  # reason is not UTF-8
    (FrameType.CLOSE, b"\x00\x00" + "é".encode()[:1]),
    (FrameType.ACK, b"\x00\x02" + b"\x00" * 8),
    (FrameType.READ, b"\x00" * 8 + b"\x03bob\x00\x01"),
], ids=repr)
def test_malformed_body_is_a_protocol_error(ftype: FrameType, body: bytes) -> None:
    conn = _receiver(ftype)
    with pytest.raises(RemoteWireError) as info:
        conn.receive_data(_frame(ftype, body))
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_unknown_frame_types_are_protocol_errors() -> None:
    for ftype in sorted(set(range(256)) - set(FrameType)):
        _, server = open_pair()
        with pytest.raises(RemoteWireError) as info:
            server.receive_data(_frame(ftype, b"\x00" * 8))
        assert info.value.close_code == CloseCode.PROTOCOL_ERROR, ftype


# --- value ranges (issue 12) ---------------------------------------------------------------

_MSG = struct.Struct(">QQQQIIIBQB")
#: u64 values, with the edges of the stored range as likely as anything else.
edgy_u64 = st.one_of(u64, st.sampled_from([0, STORED_U64_MAX, STORED_U64_MAX + 1, 2**64 - 1]))


def _frame(ftype: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), ftype) + body


def _expect(server: WireConnection, raw: bytes, first_bad: str | None) -> list[Event]:
    """Decode `raw`; refused naming `first_bad` when that is set, else accepted."""
    if first_bad is None:
        return server.receive_data(raw)
    with pytest.raises(RemoteWireError) as info:
        server.receive_data(raw)
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR
    assert f" {first_bad} " in info.value.reason
    assert "out of range" in info.value.reason
    assert_poisoned(server, info.value)
    return []


@settings(max_examples=300)
@given(priority=u8, group_id=edgy_u64, mtype=st.one_of(u32, st.just(TYPE_MAX + 1)),
       msg_id=u64, refid=u64)
def test_message_values_outside_their_range_are_refused_exactly(
        priority: int, group_id: int, mtype: int, msg_id: int, refid: int) -> None:
    _, server = open_pair()
    body = _MSG.pack(msg_id, refid, 0, 0, 60, mtype, 3, priority, group_id, 0) + b"x"
    bad = ("priority" if priority > PRIORITY_MAX else "group_id" if group_id > STORED_U64_MAX
           else "type" if mtype > TYPE_MAX else None)
    events = _expect(server, _frame(FrameType.MESSAGE, body), bad)
    if bad is None:  # ids and refids keep their whole u64 range
        assert len(events) == 1
        m = events[0]
        assert isinstance(m, Message)
        assert (m.id, m.refid, m.priority, m.group_id, m.type) == (msg_id, refid, priority,
                                                                   group_id, mtype)


@settings(max_examples=200)
@given(seqs=st.lists(edgy_u64, max_size=20))
def test_ack_seqs_outside_the_stored_range_are_refused(seqs: list[int]) -> None:
    _, server = open_pair()
    raw = _frame(FrameType.ACK, struct.pack(f">H{len(seqs)}Q", len(seqs), *seqs))
    bad = "seq" if any(s > STORED_U64_MAX for s in seqs) else None
    events = _expect(server, raw, bad)
    assert bad is not None or events == [Ack(tuple(seqs))]


@settings(max_examples=200)
@given(group_id=edgy_u64, ids=st.lists(u64, max_size=8), report_seq=edgy_u64)
def test_read_and_report_ack_values_outside_the_stored_range_are_refused(
        group_id: int, ids: list[int], report_seq: int) -> None:
    _, server = open_pair()
    raw = _frame(FrameType.READ, struct.pack(">QB", group_id, 3) + b"bob"
                 + struct.pack(f">H{len(ids)}Q", len(ids), *ids))
    bad = "group_id" if group_id > STORED_U64_MAX else None
    events = _expect(server, raw, bad)
    assert bad is not None or events == [ReadReport(b"bob", group_id, tuple(ids))]
    _, server = open_pair()
    bad = "report_seq" if report_seq > STORED_U64_MAX else None
    events = _expect(server, _frame(FrameType.REPORT_ACK, struct.pack(">Q", report_seq)), bad)
    assert bad is not None or events == [ReportAck(report_seq)]


@settings(max_examples=200)
@given(event=st.one_of(
    st.builds(Message, id=u64, peer=st.just(b"bob"), payload=st.just(b""), group_id=edgy_u64,
              type=st.one_of(u32, st.just(TYPE_MAX + 1)), priority=u8),
    st.builds(Ack, seqs=st.lists(edgy_u64, max_size=5).map(tuple)),
    st.builds(ReadReport, peer=st.just(b"bob"), group_id=edgy_u64, ids=st.just(())),
    st.builds(ReportAck, report_seq=edgy_u64)))
def test_the_encoder_sends_only_what_the_decoder_accepts(event: Event) -> None:
    client, server = open_pair()
    try:
        raw = client.send(event)
    except LocalWireError as exc:
        refused = str(exc)
    else:
        assert server.receive_data(raw) == [event]
        return
    assert "out of range" in refused
    with pytest.raises(RemoteWireError):  # the same value, packed by hand, is refused
        server.receive_data(_raw_like(event))


def _raw_like(event: Event) -> bytes:
    if isinstance(event, Message):
        return _frame(FrameType.MESSAGE, _MSG.pack(event.id, 0, 0, 0, event.expiry_s,
                                                   event.type, event.flags, event.priority,
                                                   event.group_id, 3) + b"bob")
    if isinstance(event, Ack):
        n = len(event.seqs)
        return _frame(FrameType.ACK, struct.pack(f">H{n}Q", n, *event.seqs))
    if isinstance(event, ReadReport):
        return _frame(FrameType.READ, struct.pack(">QB", event.group_id, 3) + b"bob"
                      + struct.pack(">H", 0))
    assert isinstance(event, ReportAck)
    return _frame(FrameType.REPORT_ACK, struct.pack(">Q", event.report_seq))
