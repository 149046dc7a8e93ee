"""GROUP_MANAGE and GROUP_RESULT (PROTOCOL.md §8.3): layouts, ranges, directions, states.

Attacks first: counts beyond the bound, entries that overrun the frame, every
integer out of its range, trailing bytes, the frame from the wrong side or
before OPEN.  Then hypothesis round trips over the whole valid range.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from appliance.protocol.wire import (
    PREFACE,
    CloseCode,
    FrameType,
    LocalWireError,
    RemoteWireError,
    Role,
    WireConnection,
)
from appliance.protocol.wire.extensions import EXTENSION_FRAMES
from appliance.protocol.wire.frames import HEADER
from appliance.protocol.wire.groups import (
    MAX_GROUP_NAME_BYTES,
    MAX_MANAGE_MEMBERS,
    GroupFlag,
    GroupManage,
    GroupOp,
    GroupResult,
    GroupResultCode,
    Perm,
    decode_manage,
    decode_result,
)
from tests.protocol.wire.helpers import HELLO, SAMPLES, encode_extension, open_pair

MANAGE = SAMPLES[FrameType.GROUP_MANAGE]
RESULT = SAMPLES[FrameType.GROUP_RESULT]


def frame(ftype: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), ftype) + body


def manage_body(request_id: int = 1, op: int = GroupOp.ADD, group_id: int = 7, flags: int = 0,
                name: bytes = b"", count: int | None = None,
                entries: bytes = b"\x03\x03bob") -> bytes:
    if count is None:
        count = 1 if entries else 0
    return (struct.pack(">IBQIB", request_id, op, group_id, flags, len(name)) + name
            + struct.pack(">H", count) + entries)


def refused_by_server(body: bytes) -> RemoteWireError:
    _, server = open_pair()
    with pytest.raises(RemoteWireError) as info:
        server.receive_data(frame(FrameType.GROUP_MANAGE, body))
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR
    with pytest.raises(RemoteWireError):  # poisoned: nothing more is acted upon
        server.receive_data(encode_extension(MANAGE))
    return info.value


# --- attacks ----------------------------------------------------------------------------------


def test_a_count_beyond_the_bound_is_refused_before_any_entry_is_read() -> None:
    error = refused_by_server(manage_body(count=65535, entries=b""))
    assert "at most 100" in error.reason
    entry = b"\x03\x03bob"
    assert decode_manage(manage_body(count=MAX_MANAGE_MEMBERS, entries=entry * 100)).members \
        == ((b"bob", 3),) * 100
    refused_by_server(manage_body(count=MAX_MANAGE_MEMBERS + 1, entries=entry * 101))


@pytest.mark.parametrize("body", [
    manage_body(entries=b"\x03\x09bob"),  # the address overruns the frame
    manage_body(count=2),  # a second entry that is not there
    manage_body(entries=b"\x03"),  # half an entry
    manage_body() + b"\x00",  # trailing byte
    manage_body()[:-1],
    manage_body(name=b"ab")[:15],  # the name overruns the frame
    b"",
    b"\x00" * 5,
], ids=repr)
def test_malformed_bodies_are_protocol_errors(body: bytes) -> None:
    refused_by_server(body)


@pytest.mark.parametrize(("body", "field"), [
    (manage_body(op=0), "op"),
    (manage_body(op=GroupOp.DELETE + 1), "op"),
    (manage_body(op=255), "op"),
    (manage_body(group_id=2**63), "group_id"),
    (manage_body(group_id=2**64 - 1), "group_id"),
    (manage_body(flags=GroupFlag.ALL + 1), "flags"),
    (manage_body(flags=2**32 - 1), "flags"),
    (manage_body(entries=b"\x08\x03bob"), "perms"),
    (manage_body(entries=b"\xff\x03bob"), "perms"),
    (manage_body(entries=b"\x03\x00"), "address"),
    (manage_body(entries=b"\x03\x41" + b"a" * 65), "address"),
], ids=repr)
def test_every_integer_out_of_range_is_named(body: bytes, field: str) -> None:
    assert field in refused_by_server(body).reason


@pytest.mark.parametrize("body", [
    struct.pack(">IBQI", 1, 9, 7, 0),  # result code 9: none such
    struct.pack(">IBQI", 1, 0, 2**63, 0),
    struct.pack(">IBQI", 1, 0, 7, 0) + b"\x00",
    struct.pack(">IBQI", 1, 0, 7, 0)[:-1],
], ids=repr)
def test_the_client_refuses_a_malformed_result(body: bytes) -> None:
    client, _ = open_pair()
    with pytest.raises(RemoteWireError) as info:
        client.receive_data(frame(FrameType.GROUP_RESULT, body))
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("event", [
    GroupManage(-1, GroupOp.ADD, 7),
    GroupManage(2**32, GroupOp.ADD, 7),
    GroupManage(1, 0, 7),
    GroupManage(1, GroupOp.ADD, 2**63),
    GroupManage(1, GroupOp.CREATE, 0, name=b"n" * (MAX_GROUP_NAME_BYTES + 1)),
    GroupManage(1, GroupOp.CREATE, 0, flags=4),
    GroupManage(1, GroupOp.ADD, 7, members=((b"", 3),)),
    GroupManage(1, GroupOp.ADD, 7, members=((b"x" * 65, 3),)),
    GroupManage(1, GroupOp.ADD, 7, members=((b"bob", 8),)),
    GroupManage(1, GroupOp.ADD, 7, members=((b"bob", 3),) * (MAX_MANAGE_MEMBERS + 1)),
    GroupResult(1, 99),
    GroupResult(-1, 0),
    GroupResult(1, 0, 2**63),
    GroupResult(1, 0, 7, 2**32),
], ids=repr)
def test_the_encoder_refuses_to_send_what_is_out_of_range(event: object) -> None:
    with pytest.raises(LocalWireError):
        event.encode_body()  # type: ignore[attr-defined]


def test_each_frame_goes_one_way_only() -> None:
    client, server = open_pair()
    with pytest.raises(RemoteWireError) as info:
        server.receive_data(encode_extension(RESULT))
    assert "GROUP_RESULT not allowed" in info.value.reason
    with pytest.raises(RemoteWireError):
        client.receive_data(encode_extension(MANAGE))
    client, server = open_pair()
    with pytest.raises(LocalWireError):
        client.send(RESULT)
    with pytest.raises(LocalWireError):
        server.send(MANAGE)


def test_only_open_connections_carry_them() -> None:
    server = WireConnection(Role.SERVER)
    server.receive_data(PREFACE)
    with pytest.raises(RemoteWireError) as info:  # before HELLO
        server.receive_data(encode_extension(MANAGE))
    assert info.value.close_code == CloseCode.HELLO_REQUIRED
    client = WireConnection(Role.CLIENT)
    with pytest.raises(LocalWireError):
        client.send(MANAGE)  # before HELLO
    client.send(HELLO)
    with pytest.raises(LocalWireError):
        client.send(MANAGE)  # before WELCOME
    with pytest.raises(RemoteWireError):
        client.receive_data(encode_extension(RESULT))


# --- what works ----------------------------------------------------------------------------


def test_the_codec_carries_both_frames_in_open() -> None:
    client, server = open_pair()
    data = client.send(MANAGE)
    assert data == encode_extension(MANAGE)
    assert server.receive_data(data) == [MANAGE]
    assert client.receive_data(server.send(RESULT)) == [RESULT]
    assert EXTENSION_FRAMES[FrameType.GROUP_MANAGE][0] is GroupManage


def test_a_create_frame_in_bytes() -> None:
    event = GroupManage(0x01020304, GroupOp.CREATE, 0, b"team", GroupFlag.NO_STORE,
                        ((b"bob", Perm.DEFAULT),))
    assert event.encode_body() == bytes.fromhex(
        "01020304" "01" "0000000000000000" "00000002" "04") + b"team" + bytes.fromhex(
        "0001" "03" "03") + b"bob"


addresses = st.binary(min_size=1, max_size=64)
manages = st.builds(
    GroupManage, request_id=st.integers(0, 2**32 - 1), op=st.sampled_from(list(GroupOp)),
    group_id=st.integers(0, 2**63 - 1), name=st.binary(max_size=MAX_GROUP_NAME_BYTES),
    flags=st.integers(0, GroupFlag.ALL),
    members=st.lists(st.tuples(addresses, st.integers(0, Perm.ALL)),
                     max_size=MAX_MANAGE_MEMBERS).map(tuple))
results = st.builds(GroupResult, request_id=st.integers(0, 2**32 - 1),
                    result=st.sampled_from(list(GroupResultCode)),
                    group_id=st.integers(0, 2**63 - 1), members=st.integers(0, 2**32 - 1))


@settings(max_examples=200)
@given(manages)
def test_manage_round_trip(event: GroupManage) -> None:
    assert decode_manage(event.encode_body()) == event


@settings(max_examples=200)
@given(results)
def test_result_round_trip(event: GroupResult) -> None:
    assert decode_result(event.encode_body()) == event


@settings(max_examples=100)
@given(manages, st.data())
def test_any_cut_of_a_manage_frame_is_refused(event: GroupManage, data: st.DataObject) -> None:
    body = event.encode_body()
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises((ValueError, struct.error, IndexError)):
        decode_manage(body[:cut])
