"""RFC 9110 §14 ranges: what is honoured, ignored and refused."""

from __future__ import annotations

import pytest

from appliance.media.ranges import ByteRange, RangeNotSatisfiableError, parse_range

ETAG = '"abc"'


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=0-99", ByteRange(0, 99)),
    ("bytes=100-", ByteRange(100, 999)),
    ("bytes=-10", ByteRange(990, 999)),
    ("bytes=-5000", ByteRange(0, 999)),  # a suffix longer than the file: all of it
    ("bytes=990-5000", ByteRange(990, 999)),  # a last-pos past the end is clipped
    ("BYTES = 5-5", ByteRange(5, 5)),
])
def test_one_range_is_honoured(header: str, expected: ByteRange) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", [
    None, "items=0-5", "bytes=0-1,5-6", "bytes=5-1", "bytes=a-b", "bytes=", "bytes=5",
    "bytes=--5", "bytes=0x10-20", "bytes=" + "9" * 40 + "-", "bytes=\u0661-\u0662",
])
def test_other_ranges_mean_the_whole_file(header: str | None) -> None:
    assert parse_range(header, 1000) is None


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_a_range_past_the_end_is_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError) as caught:
        parse_range(header, 1000)
    assert caught.value.size == 1000


def test_an_empty_file_satisfies_no_range() -> None:
    with pytest.raises(RangeNotSatisfiableError):
        parse_range("bytes=-5", 0)


def test_if_range_honours_the_range_only_for_our_etag() -> None:
    assert parse_range("bytes=0-1", 10, if_range=ETAG, etag=ETAG) == ByteRange(0, 1)
    assert parse_range("bytes=0-1", 10, if_range='"other"', etag=ETAG) is None
    assert parse_range("bytes=0-1", 10, if_range="Wed, 21 Oct 2015 07:28:00 GMT",
                       etag=ETAG) is None


def test_content_range() -> None:
    assert ByteRange(5, 9).content_range(10) == b"bytes 5-9/10"
    assert ByteRange(5, 9).length == 5
