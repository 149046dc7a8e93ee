"""Bounded decompression (a bomb costs its limit) and the page's encoding."""

from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib

import pytest

from appliance.errors import PreviewFetchError
from appliance.media.previews.decode import BoundedDecoder, decode_html


def _feed_all(decoder: BoundedDecoder, data: bytes, piece: int = 65536) -> bytes:
    out = bytearray()
    for start in range(0, len(data), piece):
        out += decoder.feed(data[start:start + piece])
        if decoder.exceeded:
            break
    return bytes(out)


def test_gzip_bomb_stops_at_the_limit_with_bounded_memory() -> None:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    bomb = b"".join(squeeze.compress(zeros) for _ in range(256)) + squeeze.flush()  # 256 MiB
    assert len(bomb) < 300_000
    tracemalloc.start()
    try:
        decoder = BoundedDecoder("gzip", 1 << 20)
        out = _feed_all(decoder, bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert decoder.exceeded
    assert len(out) == 1 << 20
    assert decoder.total == 1 << 20
    assert peak < 8 << 20, f"decoding a bomb peaked at {peak} bytes"


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate", "deflate-raw", "identity", ""])
def test_codings_decode(coding: str) -> None:
    text = b"<title>hello</title>" * 100
    if coding in ("gzip", "x-gzip"):
        data = gzip.compress(text)
    elif coding == "deflate":
        data = zlib.compress(text)
    elif coding == "deflate-raw":  # what some servers send as "deflate"
        squeeze = zlib.compressobj(wbits=-15)
        data, coding = squeeze.compress(text) + squeeze.flush(), "deflate"
    else:
        data = text
    decoder = BoundedDecoder(coding, 1 << 20)
    assert _feed_all(decoder, data, piece=7) == text
    assert not decoder.exceeded
    assert not decoder.truncated


def test_gzip_members_and_trailing_junk() -> None:
    decoder = BoundedDecoder("gzip", 100)
    assert decoder.feed(gzip.compress(b"a") + gzip.compress(b"b") + b"junk") == b"ab"


def test_cut_and_damaged_streams() -> None:
    decoder = BoundedDecoder("gzip", 1 << 20)
    decoder.feed(gzip.compress(b"x" * 10000)[:-20])
    assert decoder.truncated
    with pytest.raises(PreviewFetchError, match="damaged gzip body"):
        BoundedDecoder("gzip", 100).feed(b"not gzip at all")


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, gzip"])
def test_other_codings_are_refused(coding: str) -> None:
    with pytest.raises(PreviewFetchError, match="is not accepted"):
        BoundedDecoder(coding, 100)


@pytest.mark.parametrize(("body", "content_type", "text"), [
    ('<meta charset="windows-1251"><title>Привет</title>'.encode("cp1251"), "text/html",
     "Привет"),
    ('<meta http-equiv="Content-Type" content="text/html; charset=koi8-r"><p>Мир'
     .encode("koi8-r"), "text/html", "Мир"),
    ("<title>café</title>".encode("latin-1"), "text/html; charset=ISO-8859-1", "café"),
    # The header wins over the meta tag; latin-1 is read as windows-1252 (HTML standard).
    ('<meta charset="utf-8">\x93quoted\x94'.encode("latin-1"), 'text/html; charset="latin1"',
     "\u201cquoted\u201d"),
    ("\ufeff<title>bom</title>".encode("utf-16-le"), "text/html; charset=iso-8859-1", "bom"),
    (b"<title>\xff broken</title>", "text/html", "\ufffd broken"),
    (b'<meta charset="rot13"><title>plain</title>', "text/html", "plain"),
    (b'<meta charset="utf-7"><title>+ADw-x</title>', "text/html", "+ADw-x"),
])
def test_charset(body: bytes, content_type: str, text: str) -> None:
    assert text in decode_html(body, content_type)


def test_meta_charset_is_looked_for_in_the_first_1024_bytes_only() -> None:
    body = b" " * 1100 + '<meta charset="windows-1251">Привет'.encode("cp1251")
    assert "Привет" not in decode_html(body, "text/html")


@pytest.mark.parametrize("charset", ["punycode", "idna", "undefined", "utf-32", "rot13",
                                     "unicode_escape", "utf-8-sig"])
def test_a_label_the_web_does_not_know_is_ignored(charset: str) -> None:
    """Python's registry knows more than the WHATWG list: punycode decodes in quadratic
    time (this body took minutes), idna and undefined raise whatever the handler."""
    body = "<title>caf\u00e9</title>-".encode() + b"a" * (256 * 1024) + b"\xff"
    started = time.perf_counter()
    for content_type in (f"text/html; charset={charset}", "text/html"):
        meta = f'<meta charset="{charset}">'.encode()
        assert "<title>caf\u00e9</title>" in decode_html(
            body if "charset" in content_type else meta + body, content_type)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(("label", "text", "codec"), [
    ("windows-874", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35", "cp874"),
    ("x-mac-cyrillic", "\u041f\u0440\u0438\u0432\u0435\u0442", "mac-cyrillic"),
    ("shift_jis", "\u65e5\u672c\u8a9e", "shift_jis"),
    ("iso-2022-jp", "\u65e5\u672c\u8a9e", "iso2022_jp"),
    ("euc-kr", "\ud55c\uad6d\uc5b4", "euc_kr"),
    ("gb18030", "\u4e2d\u6587", "gb18030"),
    ("big5", "\u4e2d\u6587", "big5"),
    ("utf-16be", "caf\u00e9", "utf-16-be"),
    ("utf-16", "caf\u00e9", "utf-16-le"),  # the WHATWG label's meaning
])
def test_the_web_encodings_are_honoured(label: str, text: str, codec: str) -> None:
    assert text in decode_html(text.encode(codec), f"text/html; charset={label}")
