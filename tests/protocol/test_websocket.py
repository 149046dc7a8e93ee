"""The server-side WebSocket data-phase codec (RFC 6455 §5)."""

from __future__ import annotations

import os

from hypothesis import given, strategies as st

from appliance.protocol.websocket import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PROTOCOL_ERROR,
    TEXT,
    TOO_BIG,
    UNSUPPORTED_DATA,
    Closed,
    Data,
    PingReceived,
    ServerWebSocket,
    close_frame,
    frame,
)


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None,
                 masked: bool = True) -> bytes:
    """A frame as a client sends it (masked), built independently of the codec."""
    key = os.urandom(4) if mask is None else mask
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes((b0, (0x80 if masked else 0) | n))
    elif n < 65536:
        head = bytes((b0, (0x80 if masked else 0) | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, (0x80 if masked else 0) | 127)) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def data_of(events: list[object]) -> bytes:
    return b"".join(e.payload for e in events if isinstance(e, Data))  # type: ignore[attr-defined]


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5), st.data())
def test_payloads_survive_any_split(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(client_frame(BINARY, p) for p in payloads)
    cut = data.draw(st.integers(0, len(stream)))
    codec = ServerWebSocket(1 << 20)
    events = codec.receive(stream[:cut]) + codec.receive(stream[cut:])
    assert data_of(events) == b"".join(payloads)
    assert not [e for e in events if isinstance(e, Closed)]


def test_every_byte_boundary_and_large_lengths() -> None:
    payload = os.urandom(70_000)  # the 64-bit length form
    stream = client_frame(BINARY, payload[:200]) + client_frame(BINARY, payload)
    codec = ServerWebSocket(1 << 20)
    got = []
    for i in range(0, len(stream), 997):
        got += codec.receive(stream[i:i + 997])
    assert data_of(got) == payload[:200] + payload
    codec = ServerWebSocket(1 << 20)
    got = [e for i in range(len(stream[:400])) for e in codec.receive(stream[i:i + 1])]
    assert data_of(got) == payload[:200]


def test_fragments_control_frames_and_close() -> None:
    codec = ServerWebSocket(1000)
    stream = (client_frame(BINARY, b"ab", fin=False) + client_frame(PING, b"hi")
              + client_frame(CONTINUATION, b"cd") + client_frame(CLOSE, b"\x03\xe8bye"))
    events = codec.receive(stream)
    assert events == [Data(b"ab"), PingReceived(b"hi"), Data(b"cd"), Closed(1000, "bye")]


def test_the_size_limit_applies_from_the_header() -> None:
    codec = ServerWebSocket(1000)
    # Only the header of a 1 GiB frame: refused before any payload arrives.
    header = bytes((0x82, 0x80 | 127)) + (1 << 30).to_bytes(8, "big")
    assert codec.receive(header) == [Closed(TOO_BIG, "message above 1000 bytes")]
    codec = ServerWebSocket(1000)
    events = codec.receive(client_frame(BINARY, b"x" * 600, fin=False)
                           + client_frame(CONTINUATION, b"x" * 600))
    assert events[-1] == Closed(TOO_BIG, "message above 1000 bytes")


def test_rule_breaking_frames_close_with_a_reason() -> None:
    cases = [
        (client_frame(TEXT, b"hello"), UNSUPPORTED_DATA),
        (client_frame(BINARY, b"x", masked=False), PROTOCOL_ERROR),
        (client_frame(CONTINUATION, b"x"), PROTOCOL_ERROR),
        (client_frame(PING, b"x" * 126), PROTOCOL_ERROR),
        (client_frame(PING, b"x", fin=False), PROTOCOL_ERROR),
        (client_frame(0x3, b"x"), PROTOCOL_ERROR),
        (bytes((0xC2, 0x80)) + bytes(4), PROTOCOL_ERROR),  # RSV1 without an extension
    ]
    for stream, code in cases:
        [closed] = ServerWebSocket(1000).receive(stream)
        assert isinstance(closed, Closed)
        assert closed.code == code


@given(st.binary(max_size=400))
def test_garbage_only_ever_yields_events(noise: bytes) -> None:
    codec = ServerWebSocket(256)
    for i in range(0, len(noise), 7):
        events = codec.receive(noise[i:i + 7])
        assert all(isinstance(e, Data | PingReceived | Closed) for e in events)
        if any(isinstance(e, Closed) for e in events):
            break


def test_server_frames_are_unmasked_with_the_shortest_length() -> None:
    assert frame(BINARY, b"abc") == b"\x82\x03abc"
    assert frame(BINARY, bytes(200))[:4] == b"\x82\x7e\x00\xc8"
    assert frame(BINARY, bytes(70_000))[:2] == b"\x82\x7f"
    assert close_frame(1009, "too big") == b"\x88\x09\x03\xf1too big"
