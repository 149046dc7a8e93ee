"""Presence frames (PROTOCOL.md §8.2): exact bodies, bounded counts, OPEN only, one way.

Attacks first: an activity text too long or not UTF-8, counts beyond their
bounds, empty or oversized addresses, trailing bytes, unknown kinds, and
frames sent the wrong way or before WELCOME are each a PROTOCOL_ERROR (or
HELLO_REQUIRED before the HELLO) naming the frame; the encoder refuses to
send what the decoder would refuse.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import appliance.protocol.wire
from appliance.protocol.wire import (
    CloseCode,
    LocalWireError,
    Ping,
    RemoteWireError,
    Role,
    State,
    WireConnection,
    encode,
)
from appliance.protocol.wire.frames import HEADER, PREFACE, FrameType
from appliance.protocol.wire.presence import (
    MAX_ACTIVITY_BYTES,
    MAX_PRESENCE_ENTRIES,
    MAX_SUBSCRIBE_ADDRESSES,
    PresenceEntry,
    PresenceKind,
    PresenceSet,
    PresenceState,
    PresenceSubscribe,
    PresenceUpdate,
    SubscribeOp,
    pack_presence,
)
from tests.protocol.wire.helpers import HELLO, open_pair

addresses = st.binary(min_size=1, max_size=64)
activities = st.text(max_size=16).map(str.encode).filter(lambda b: len(b) <= MAX_ACTIVITY_BYTES)
group_ids = st.integers(1, 2**63 - 1)
typings = st.builds(lambda kind, peer: PresenceSet(kind, peer=peer),
                    st.sampled_from([PresenceKind.TYPING, PresenceKind.TYPING_STOPPED]),
                    addresses)
group_typings = st.builds(lambda kind, group: PresenceSet(kind, group_id=group),
                          st.sampled_from([PresenceKind.TYPING, PresenceKind.TYPING_STOPPED]),
                          group_ids)
activity_sets = st.builds(lambda text: PresenceSet(PresenceKind.ACTIVITY, activity=text),
                          activities)
subscribes = st.builds(PresenceSubscribe, st.sampled_from(list(SubscribeOp)),
                       st.lists(addresses, min_size=1, max_size=40))
entries = st.builds(PresenceEntry, addresses, st.sampled_from(list(PresenceState)),
                    last_seen_ms=st.integers(0, 2**63 - 1), group_id=st.integers(0, 2**63 - 1),
                    activity=activities)
updates = st.builds(PresenceUpdate, st.lists(entries, min_size=1, max_size=30))


def frame(ftype: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), ftype) + body


def set_body(kind: int, group: int, peer: bytes, activity: bytes) -> bytes:
    return (struct.pack(">BQB", kind, group, len(peer)) + peer + bytes((len(activity),))
            + activity)


def refused(conn: WireConnection, data: bytes) -> RemoteWireError:
    with pytest.raises(RemoteWireError) as info:
        conn.receive_data(data)
    assert conn.state is State.ERROR
    return info.value


# --- attacks -----------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "why"), [
    (set_body(PresenceKind.ACTIVITY, 0, b"", b"x" * (MAX_ACTIVITY_BYTES + 1)), "exceeds 64"),
    (set_body(PresenceKind.ACTIVITY, 0, b"", b"\xff\xfe"), "utf-8"),
    (set_body(PresenceKind.ACTIVITY, 0, b"", b"\xc3"), "utf-8"),  # cut in a character
    (set_body(PresenceKind.ACTIVITY, 0, b"bob", b"hi"), "names no peer"),
    (set_body(PresenceKind.TYPING, 0, b"", b""), "either a peer or a group"),
    (set_body(PresenceKind.TYPING, 7, b"bob", b""), "either a peer or a group"),
    (set_body(PresenceKind.TYPING, 0, b"bob", b"hi"), "only ACTIVITY"),
    (set_body(PresenceKind.TYPING, 2**63, b"", b""), "out of range"),
    (set_body(PresenceKind.TYPING, 0, b"b" * 65, b""), "1-64 bytes"),
    (set_body(0, 0, b"bob", b""), "unknown PRESENCE_SET kind"),
    (set_body(9, 0, b"bob", b""), "unknown PRESENCE_SET kind"),
    (set_body(PresenceKind.TYPING, 0, b"bob", b"") + b"\0", "trailing"),
    (set_body(PresenceKind.TYPING, 0, b"bob", b"")[:-1], "malformed"),
    (b"", "malformed"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_bad_presence_set_is_a_protocol_error_naming_why(body: bytes, why: str) -> None:
    _, server = open_pair()
    error = refused(server, frame(FrameType.PRESENCE_SET, body))
    assert error.close_code == CloseCode.PROTOCOL_ERROR
    assert "PRESENCE_SET" in error.reason
    assert why.lower() in error.reason.lower()


def _subscribe_body(op: int, names: list[bytes], count: int | None = None) -> bytes:
    return struct.pack(">BH", op, len(names) if count is None else count) + b"".join(
        bytes((len(a),)) + a for a in names)


@pytest.mark.parametrize("body", [
    _subscribe_body(SubscribeOp.ADD, []),
    _subscribe_body(SubscribeOp.ADD, [b"a"] * (MAX_SUBSCRIBE_ADDRESSES + 1)),
    _subscribe_body(SubscribeOp.ADD, [b"a"], count=65535),  # a count the body lacks
    _subscribe_body(SubscribeOp.ADD, [b""]),
    _subscribe_body(SubscribeOp.ADD, [b"x" * 65]),
    _subscribe_body(3, [b"a"]),
    _subscribe_body(SubscribeOp.REMOVE, [b"a"]) + b"\0",
    b"\x01",
], ids=["empty", "too many", "short", "empty address", "long address", "unknown op",
        "trailing", "truncated"])
def test_a_bad_presence_subscribe_is_a_protocol_error(body: bytes) -> None:
    _, server = open_pair()
    error = refused(server, frame(FrameType.PRESENCE_SUBSCRIBE, body))
    assert error.close_code == CloseCode.PROTOCOL_ERROR
    assert "PRESENCE_SUBSCRIBE" in error.reason


def test_a_count_beyond_the_bound_is_refused_before_any_address_is_read() -> None:
    _, server = open_pair()
    error = refused(server, frame(FrameType.PRESENCE_SUBSCRIBE,
                                  _subscribe_body(SubscribeOp.ADD, [], count=1001)))
    assert "more than 1000" in error.reason


@pytest.mark.parametrize("entry", [
    PresenceEntry(b"", PresenceState.ONLINE),
    PresenceEntry(b"a", 5),
    PresenceEntry(b"a", PresenceState.ONLINE, activity=b"\xff"),
    PresenceEntry(b"a", PresenceState.ONLINE, activity=b"x" * 65),
    PresenceEntry(b"a", PresenceState.OFFLINE, last_seen_ms=2**63),
], ids=["no address", "unknown state", "not utf-8", "activity too long", "last seen"])
def test_a_client_refuses_a_bad_presence_entry(entry: PresenceEntry) -> None:
    client, _ = open_pair()
    with pytest.raises(ValueError, match=r"address|state|utf-8|exceeds|out of range"):
        entry.encode()
    raw = (bytes((len(entry.address),)) + entry.address
           + struct.pack(">BQQB", entry.state, entry.last_seen_ms, entry.group_id,
                         len(entry.activity)) + entry.activity)
    error = refused(client, frame(FrameType.PRESENCE, struct.pack(">H", 1) + raw))
    assert error.close_code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("count", [0, MAX_PRESENCE_ENTRIES + 1])
def test_a_presence_frame_carries_1_to_256_entries(count: int) -> None:
    client, server = open_pair()
    many = [PresenceEntry(b"u%d" % i, PresenceState.OFFLINE) for i in range(count)]
    with pytest.raises(LocalWireError):
        server.send(PresenceUpdate(many))
    error = refused(client, pack_presence([e.encode() for e in many]))
    assert "1-256 entries" in error.reason


@pytest.mark.parametrize("event", [
    PresenceSet(PresenceKind.TYPING),
    PresenceSet(PresenceKind.ACTIVITY, activity=b"x" * 65),
    PresenceSet(PresenceKind.TYPING, peer=b"bob", group_id=1),
    PresenceSet(4, peer=b"bob"),
    PresenceSubscribe(SubscribeOp.ADD, []),
    PresenceSubscribe(SubscribeOp.ADD, [b"x" * 65]),
    PresenceSubscribe(0, [b"bob"]),
], ids=repr)
def test_the_encoder_refuses_what_the_decoder_would(event: PresenceSet | PresenceSubscribe
                                                      ) -> None:
    client, _ = open_pair()
    with pytest.raises(LocalWireError):
        client.send(event)
    assert client.state is State.OPEN


def test_presence_frames_go_one_way_only() -> None:
    client, server = open_pair()
    error = refused(client, encode(PresenceSet(PresenceKind.TYPING, peer=b"bob")))
    assert "not allowed from this side" in error.reason
    error = refused(server, encode(PresenceUpdate([PresenceEntry(b"b", 1)])))
    assert "not allowed from this side" in error.reason
    client, server = open_pair()
    with pytest.raises(LocalWireError):
        client.send(PresenceUpdate([PresenceEntry(b"b", 1)]))
    with pytest.raises(LocalWireError):
        server.send(PresenceSubscribe(SubscribeOp.ADD, [b"bob"]))


def test_presence_frames_before_welcome_are_refused() -> None:
    server = WireConnection(Role.SERVER)
    error = refused(server, PREFACE + encode(PresenceSubscribe(SubscribeOp.ADD, [b"bob"])))
    assert error.close_code == CloseCode.HELLO_REQUIRED
    client = WireConnection(Role.CLIENT)
    client.send(HELLO)
    error = refused(client, encode(PresenceUpdate([PresenceEntry(b"b", 1)])))
    assert error.close_code == CloseCode.PROTOCOL_ERROR
    with pytest.raises(LocalWireError):
        WireConnection(Role.CLIENT).send(PresenceSet(PresenceKind.TYPING, peer=b"bob"))


# --- round trips ---------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.one_of(typings, group_typings, activity_sets, subscribes))
def test_client_frames_round_trip(event: PresenceSet | PresenceSubscribe) -> None:
    client, server = open_pair()
    assert server.receive_data(client.send(event)) == [event]
    assert server.state is State.OPEN


@settings(max_examples=300)
@given(updates)
def test_presence_round_trips_and_packs_alike(event: PresenceUpdate) -> None:
    client, server = open_pair()
    data = server.send(event)
    assert data == pack_presence([e.encode() for e in event.entries]) == encode(event)
    assert client.receive_data(data) == [event]


@settings(max_examples=50)
@given(st.lists(st.one_of(typings, activity_sets, subscribes), min_size=1, max_size=10))
def test_presence_frames_mix_with_base_frames_in_one_buffer(
        events: list[PresenceSet | PresenceSubscribe]) -> None:
    client, server = open_pair()
    data = b"".join(client.send(e) + client.send(Ping(i)) for i, e in enumerate(events))
    received = server.receive_data(data)
    assert received[::2] == events
    assert server.buffered == 0


def test_the_largest_entries_fit_a_default_frame() -> None:
    """256 entries of the largest size stay below the server's default 66,048 bytes."""
    big = PresenceEntry(b"a" * 64, PresenceState.ONLINE, last_seen_ms=2**63 - 1,
                        group_id=2**63 - 1, activity="é".encode() * 32)
    data = pack_presence([big.encode()] * MAX_PRESENCE_ENTRIES)
    assert len(data) - 5 <= 64 * 1024 + 512
    client, _ = open_pair()
    (received,) = client.receive_data(data)
    assert isinstance(received, PresenceUpdate)
    assert len(received.entries) == MAX_PRESENCE_ENTRIES


# --- PROTOCOL.md §8.2 says what the code does ------------------------------------------------


def test_protocol_md_lists_the_presence_codes_and_bounds() -> None:
    text = Path(appliance.protocol.wire.__file__).with_name("PROTOCOL.md").read_text()
    section = text.split("\n### 8.2 Presence")[1].split("\n### 8.3")[0]

    def listed(field: str) -> dict[str, int]:
        row = re.search(rf"`{field}`: ([^|]+)\|", section)
        assert row is not None, field
        return {name: int(value) for value, name in re.findall(r"(\d+) ([A-Z_]+)", row[1])}

    assert listed("kind") == {k.name: k.value for k in PresenceKind}
    assert listed("op") == {o.name: o.value for o in SubscribeOp}
    assert listed("state") == {s.name: s.value for s in PresenceState}
    dash = "\N{EN DASH}"  # PROTOCOL.md writes ranges with one
    assert f"1{dash}{MAX_SUBSCRIBE_ADDRESSES}" in section
    assert f"1{dash}{MAX_PRESENCE_ENTRIES}" in section
    assert f"at most {MAX_ACTIVITY_BYTES} bytes" in section
