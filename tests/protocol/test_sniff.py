"""`detect` on every prefix of what each protocol sends first (issue #4)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from appliance.protocol.sniff import H2_PREFACE, MAX_METHOD, Detected, detect
from appliance.protocol.wire import Hello, Role, WireConnection

NATIVE = WireConnection(Role.CLIENT).send(Hello(b"tok", b"dev"))
# The first bytes of a real ClientHello (curl 7.88, TLS 1.3 capable).
TLS = bytes.fromhex("16030102000100") + bytes(64)
OPENING: dict[Detected, list[bytes]] = {
    Detected.NATIVE: [NATIVE],
    Detected.TLS: [TLS, bytes.fromhex("160303")],
    Detected.HTTP2: [H2_PREFACE + b"\x00\x00\x12\x04"],
    Detected.HTTP1: [b"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n",
                     b"POST /v1/messages HTTP/1.1\r\n", b"OPTIONS * HTTP/1.1\r\n",
                     b"PRIX / HTTP/1.1\r\n"],
}


@pytest.mark.parametrize(("expected", "data"), [(k, d) for k, ds in OPENING.items() for d in ds])
def test_every_prefix_answers_none_then_one_final_answer(expected: Detected, data: bytes) -> None:
    answers = [detect(data[:n]) for n in range(len(data) + 1)]
    first = next(i for i, a in enumerate(answers) if a is not None)
    assert all(a is None for a in answers[:first])
    assert all(a is expected for a in answers[first:]), answers


@pytest.mark.parametrize("data", [b"\x00\x01", b"\x16\x01", b"GE\x00", b" GET",
                                  b"PRI * HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n\r\nXX",
                                  b"A" * (MAX_METHOD + 1), b"\r\n\r\n", b"\xff"])
def test_garbage_is_unknown(data: bytes) -> None:
    assert detect(data) is Detected.UNKNOWN


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_a_final_answer_never_changes(head: bytes, tail: bytes) -> None:
    answer = detect(head)
    if answer is not None:
        assert detect(head + tail) is answer


@given(st.binary(min_size=MAX_METHOD + len(H2_PREFACE) + 1, max_size=200))
def test_enough_bytes_always_get_an_answer(data: bytes) -> None:
    assert detect(data) is not None
