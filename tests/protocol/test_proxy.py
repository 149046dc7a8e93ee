"""The PROXY protocol v1/v2 parser: spec examples, every prefix, and fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from appliance.protocol.proxy import (
    MAX_V2_BYTES,
    V1_MAX_BYTES,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    encode_v1,
    encode_v2,
    parse,
    starts_like_a_header,
)

HEADERS = [
    (encode_v1("192.0.2.1", "198.51.100.2", 56324, 443), ProxyHeader(1, "192.0.2.1", 56324)),
    (encode_v1("2001:db8::1", "2001:db8::2", 1, 65535), ProxyHeader(1, "2001:db8::1", 1)),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1)),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyHeader(1)),
    (encode_v2("192.0.2.1", "198.51.100.2", 4000, 443), ProxyHeader(2, "192.0.2.1", 4000)),
    (encode_v2("2001:db8::7", "2001:db8::2", 5, 443), ProxyHeader(2, "2001:db8::7", 5)),
    (encode_v2("192.0.2.1", "198.51.100.2", 4000, 443, tlvs=b"\x04\x00\x03abc"),
     ProxyHeader(2, "192.0.2.1", 4000)),
    (encode_v2(None), ProxyHeader(2)),  # LOCAL: a health check from the proxy itself
]


@pytest.mark.parametrize(("raw", "header"), HEADERS)
def test_headers_parse_whole_and_need_more_when_cut(raw: bytes, header: ProxyHeader) -> None:
    assert parse(raw + b"GET / HTTP/1.1\r\n") == (header, len(raw))
    for cut in range(len(raw)):
        assert parse(raw[:cut]) is None, cut
        assert starts_like_a_header(raw[:cut]) or cut == 0


@pytest.mark.parametrize("bad", [
    b"GET / HTTP/1.1\r\n",  # a trusted proxy must send the header
    b"PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n",
    b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
    b"PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",
    b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
    b"PROXY TCP4 \xff\r\n",
    b"PROXY " + b"1" * V1_MAX_BYTES,
    V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 header
    V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
    V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # INET needs 12 bytes
    V2_SIGNATURE + b"\x21\x51\x00\x0c" + bytes(12),  # family 5
    V2_SIGNATURE + b"\x21\x11" + (MAX_V2_BYTES).to_bytes(2, "big"),
    b"\r\n\r\nX",
])
def test_malformed_headers_are_refused_early(bad: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(bad)


def test_untrusted_lookalikes() -> None:
    assert starts_like_a_header(b"PROXY TCP4")
    assert starts_like_a_header(V2_SIGNATURE[:5])
    assert not starts_like_a_header(b"POST / HTTP/1.1")
    assert not starts_like_a_header(b"\x89TDG")


@given(st.binary(max_size=300))
def test_fuzz_never_raises_anything_else(data: bytes) -> None:
    try:
        result = parse(data)
    except ProxyHeaderError:
        return
    if result is not None:
        header, size = result
        assert 0 < size <= len(data)
        assert header.version in (1, 2)


@given(st.sampled_from([raw for raw, _ in HEADERS]), st.binary(max_size=64))
def test_fuzz_valid_header_then_anything(raw: bytes, tail: bytes) -> None:
    result = parse(raw + tail)
    assert result is not None
    assert result[1] == len(raw)


@given(st.ip_addresses(v=4), st.integers(0, 65535))
def test_v1_and_v2_agree(address: object, port: int) -> None:
    v1 = parse(encode_v1(str(address), "192.0.2.9", port, 443))
    v2 = parse(encode_v2(str(address), "192.0.2.9", port, 443))
    assert v1 is not None
    assert v2 is not None
    assert (v1[0].source, v1[0].source_port) == (v2[0].source, v2[0].source_port) == (
        str(address), port)
