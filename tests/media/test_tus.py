"""tus 1.0 header values: bounded, validated, named in every refusal."""

from __future__ import annotations

import base64

import pytest

from appliance.media.tus import (
    MAX_METADATA_PAIRS,
    TusError,
    check_version,
    header_int,
    options_headers,
    parse_metadata,
)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_metadata_pairs_decode() -> None:
    value = f"filename {_b64('photo é.jpg')},filetype {_b64('image/jpeg')},empty".encode()
    assert parse_metadata(value) == {"filename": "photo é.jpg", "filetype": "image/jpeg",
                                     "empty": ""}
    assert parse_metadata(None) == {}


@pytest.mark.parametrize("value", [
    b"a x!!", b"a " + _b64("1").encode() + b",a " + _b64("2").encode(),
    b",".join(b"k%d eA==" % i for i in range(MAX_METADATA_PAIRS + 1)),
    b"k" * 65 + b" eA==", b"a " + b"QUFB" * 400,
])
def test_bad_metadata_is_refused(value: bytes) -> None:
    with pytest.raises(TusError) as caught:
        parse_metadata(value)
    assert caught.value.status == 400
    assert "Upload-Metadata" in str(caught.value)


def test_non_utf8_values_are_dropped() -> None:
    assert parse_metadata(b"filename " + base64.b64encode(b"\xff\xfe")) == {}


@pytest.mark.parametrize("value", [None, b"", b"-1", b"1.5", b"0x10", b"9" * 20, b" "])
def test_integers_are_refused_unless_plain(value: bytes | None) -> None:
    with pytest.raises(TusError, match="Upload-Length"):
        header_int(value, "Upload-Length")


def test_integers() -> None:
    assert header_int(b" 42 ", "Upload-Offset") == 42


def test_version() -> None:
    check_version(b"1.0.0")
    for value in (None, b"0.2.2", b"1.0"):
        with pytest.raises(TusError) as caught:
            check_version(value)
        assert caught.value.status == 412


def test_options_headers() -> None:
    headers = dict(options_headers(1000))
    assert headers[b"tus-version"] == b"1.0.0"
    assert headers[b"tus-max-size"] == b"1000"
    assert b"creation" in headers[b"tus-extension"]
