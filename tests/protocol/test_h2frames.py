"""The HTTP/2 control-frame counter reads frame headers only, across any split of the bytes."""

from __future__ import annotations

import h2.config
import h2.connection

from appliance.protocol.h2frames import CLIENT_PREFACE, ControlFrameCounter


def _frame(ftype: int, payload: bytes = b"", flags: int = 0, stream: int = 0) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") \
        + payload


def test_control_frames_are_counted_and_requests_are_not() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()  # the preface and a SETTINGS frame
    opening = client.data_to_send()
    client.send_headers(1, [(":method", "POST"), (":path", "/v1/x"), (":scheme", "http"),
                            (":authority", "x")])
    client.send_data(1, b"body" * 100, end_stream=True)
    request = client.data_to_send()
    controls = (_frame(0x6, b"12345678") + _frame(0x4) + _frame(0x8, b"\x00\x00\x00\x01")
                + _frame(0x2, b"\x00" * 5, stream=3) + _frame(0x3, b"\x00" * 4, stream=3)
                + _frame(0xFA, b"unknown")  # an unknown type
                + _frame(0x0, stream=1)  # empty DATA that does not end the stream
                + _frame(0x0, flags=0x1, stream=1))  # empty DATA that ends it: not counted
    data = opening + request + controls
    assert data.startswith(CLIENT_PREFACE)
    whole = ControlFrameCounter().feed(data)
    assert whole == 1 + 7  # the opening SETTINGS, then 7 control frames
    # Any split gives the same count: headers and payloads may straddle reads.
    for step in (1, 2, 5, 9, 13, 100):
        counter = ControlFrameCounter()
        assert sum(counter.feed(data[i:i + step]) for i in range(0, len(data), step)) == whole


def test_a_flood_is_counted_before_anything_parses_it() -> None:
    counter = ControlFrameCounter()
    assert counter.feed(CLIENT_PREFACE + _frame(0x4) + _frame(0x6, b"12345678") * 10_000) \
        == 10_001
