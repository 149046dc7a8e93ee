"""The codec's extension-frame path (`WireConnection._extension`, PROTOCOL.md §8), attacked.

No family is registered on main yet, so a family of this file's own is added to
the codec's table for each test: a client frame whose type is not in
`FrameType` (a family may number its frames without adding them there), and a
decoder that fails the ways a hand-written one can (a KeyError from a table
lookup, an OverflowError, a TypeError), not only with the ValueError and
struct.error the design asks for.  Whatever it does, the peer gets a
PROTOCOL_ERROR and the connection is poisoned; nothing else leaves the codec
(before, these escaped `receive_data` as ValueError and KeyError: the
transport logged a traceback and dropped the connection without a CLOSE).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest

from appliance.protocol.wire import (
    PREFACE,
    U32_MAX,
    CloseCode,
    FrameType,
    Hello,
    LocalWireError,
    RemoteWireError,
    Role,
    State,
    Welcome,
    WireConnection,
    extensions,
)
from appliance.protocol.wire.frames import HEADER

#: Not in FrameType, and in no family.
PROBE = 0x4F
UNREGISTERED = 0x4E
_ERRORS: dict[int, type[Exception]] = {1: KeyError, 2: OverflowError, 3: TypeError,
                                       4: LocalWireError}


@dataclass(frozen=True)
class Probe:
    """A client frame of the test's family: one byte, `kind`."""

    FRAME_TYPE = PROBE
    kind: int

    def encode_body(self) -> bytes:
        return bytes([self.kind])


def _decode(body: bytes) -> Probe:
    (kind,) = struct.unpack(">B", body)
    error = _ERRORS.get(kind)
    if error is LocalWireError:
        raise LocalWireError("a decoder that reused an encoder's range check")
    if error is not None:
        raise error(f"a decoder that failed with {error.__name__}")
    return Probe(kind)


@pytest.fixture(autouse=True)
def family(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(extensions.EXTENSION_FRAMES, PROBE,
                        (Probe, _decode, extensions.FROM_CLIENT))
    monkeypatch.setitem(extensions.EXTENSION_TYPES, Probe, PROBE)


def _open(role: Role) -> WireConnection:
    """A connection of `role` in OPEN, through a real handshake."""
    client, server = WireConnection(Role.CLIENT), WireConnection(Role.SERVER)
    server.receive_data(client.send(Hello(b"t", b"d")))
    client.receive_data(server.send(Welcome(b"me", 0, 30, 1 << 16)))
    return client if role is Role.CLIENT else server


def _frame(ftype: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), ftype) + body


def test_a_client_frame_round_trips_in_open() -> None:
    client, server = WireConnection(Role.CLIENT), WireConnection(Role.SERVER)
    server.receive_data(client.send(Hello(b"t", b"d")))
    client.receive_data(server.send(Welcome(b"me", 0, 30, 1 << 16)))
    assert server.receive_data(client.send(Probe(7))) == [Probe(7)]


@pytest.mark.parametrize("kind", sorted(_ERRORS))
def test_a_decoder_that_fails_any_way_is_a_protocol_error(kind: int) -> None:
    server = _open(Role.SERVER)
    with pytest.raises(RemoteWireError) as info:
        server.receive_data(_frame(PROBE, bytes([kind])))
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR
    assert "0x4f" in str(info.value)  # named even though FrameType does not know it
    assert server.state is State.ERROR


@pytest.mark.parametrize("body", [b"", b"\x07\x00"])
def test_a_body_of_the_wrong_length_is_a_protocol_error(body: bytes) -> None:
    server = _open(Role.SERVER)
    with pytest.raises(RemoteWireError) as info:
        server.receive_data(_frame(PROBE, body))
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_a_client_frame_from_the_server_is_a_protocol_error() -> None:
    client = _open(Role.CLIENT)
    with pytest.raises(RemoteWireError) as info:
        client.receive_data(_frame(PROBE, b"\x07"))
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR
    assert client.state is State.ERROR


def test_the_server_may_not_send_a_client_frame() -> None:
    with pytest.raises(LocalWireError):
        _open(Role.SERVER).send(Probe(7))


@pytest.mark.parametrize(("state", "code"), [(State.AWAIT_HELLO, CloseCode.HELLO_REQUIRED),
                                             (State.AUTHENTICATING, CloseCode.PROTOCOL_ERROR)])
def test_an_extension_frame_before_open_is_refused(state: State, code: int) -> None:
    server = WireConnection(Role.SERVER)
    hello = WireConnection(Role.CLIENT).send(Hello(b"t", b"d"))
    server.receive_data(hello if state is State.AUTHENTICATING else PREFACE)
    assert server.state is state
    with pytest.raises(RemoteWireError) as info:
        server.receive_data(_frame(PROBE, b"\x07"))
    assert info.value.close_code == code
    with pytest.raises(LocalWireError):
        WireConnection(Role.CLIENT).send(Probe(7))  # a client before OPEN cannot send one


def test_a_type_no_family_registered_is_an_unknown_frame() -> None:
    server = _open(Role.SERVER)
    with pytest.raises(RemoteWireError, match="unknown frame type 0x4e") as info:
        server.receive_data(_frame(UNREGISTERED, b""))
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


# --- WELCOME's extension fields (§3.2) ---------------------------------------------


def _welcome_with_tail(tail: bytes) -> WireConnection:
    client = WireConnection(Role.CLIENT)
    client.send(Hello(b"t", b"d", client_flags=1))
    body = struct.pack(">QIIB", 0, 1 << 16, 30, 2) + b"me" + b"v1" + tail
    client.receive_data(_frame(FrameType.WELCOME, body))
    return client


@pytest.mark.parametrize("tail", [b"\x00\x01", b"\x00\x01\x00\x00\x00\x05\x02",
                                  b"\x00" + b"\x01" * 9])
def test_a_tail_that_is_not_five_byte_entries_is_a_protocol_error(tail: bytes) -> None:
    with pytest.raises(RemoteWireError) as info:
        _welcome_with_tail(tail)
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_welcome_tails_a_client_takes() -> None:
    client = WireConnection(Role.CLIENT)
    client.send(Hello(b"t", b"d", client_flags=1))
    body = struct.pack(">QIIB", 0, 1 << 16, 30, 2) + b"me" + b"v1"
    [plain] = client.receive_data(_frame(FrameType.WELCOME, body))
    assert (plain.server_version, plain.info) == (b"v1", None)  # an older server
    empty = WireConnection(Role.CLIENT)
    empty.send(Hello(b"t", b"d", client_flags=1))
    [none] = empty.receive_data(_frame(FrameType.WELCOME, body + b"\x00"))
    assert none.info == {}
    unknown = WireConnection(Role.CLIENT)
    unknown.send(Hello(b"t", b"d", client_flags=1))
    [welcome] = unknown.receive_data(_frame(
        FrameType.WELCOME, body + b"\x00" + struct.pack(">BI", 200, 7)
        + struct.pack(">BI", 1, U32_MAX)))
    assert welcome.info == {200: 7, 1: U32_MAX}  # unknown tags are kept for the caller
