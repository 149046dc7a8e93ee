"""The strict URL parser: every numeric host form becomes the address it means."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from appliance.errors import PreviewRefusedError
from appliance.media.previews.url import MAX_URL_CHARS, check_port, join_url, parse_url


@pytest.mark.parametrize(("text", "canonical"), [
    # inet_aton's forms (and the WHATWG URL standard's): all are 127.0.0.1.
    ("http://2130706433/", "http://127.0.0.1/"),
    ("http://0177.0.0.1/", "http://127.0.0.1/"),
    ("http://0x7f.1/", "http://127.0.0.1/"),
    ("http://0X7F.0.0.1/", "http://127.0.0.1/"),
    ("http://127.1/", "http://127.0.0.1/"),
    ("http://127.0.1/", "http://127.0.0.1/"),
    ("http://127.0.0.1./", "http://127.0.0.1/"),
    ("http://0x7f000001/", "http://127.0.0.1/"),
    ("http://017700000001/", "http://127.0.0.1/"),
    # Full-width digits and ideographic dots fold to ASCII (UTS #46), then read as IPv4.
    ("http://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11/", "http://127.0.0.1/"),
    ("http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/"),
    ("http://[0:0:0:0:0:0:0:1]:80/", "http://[::1]/"),
])
def test_numeric_hosts_are_canonicalised(text: str, canonical: str) -> None:
    url = parse_url(text)
    assert str(url) == canonical
    assert isinstance(url.ip, IPv4Address | IPv6Address)


def test_names_are_lowercase_a_labels_and_fragments_dropped() -> None:
    url = parse_url("HTTPS://B\u00fccher.Example./a b/\u00e9?q=1 2&r=\u00e9#frag")
    assert str(url) == "https://xn--bcher-kva.example/a%20b/%C3%A9?q=1%202&r=%C3%A9"
    assert url.ip is None
    assert url.port == 443


def test_empty_path_and_explicit_default_port() -> None:
    assert str(parse_url("http://example.com")) == "http://example.com/"
    assert str(parse_url("http://example.com:/x")) == "http://example.com/x"
    assert str(parse_url("https://example.com:443/x")) == "https://example.com/x"
    assert str(parse_url("http://example.com:8080/x")) == "http://example.com:8080/x"


def test_backslashes_in_the_path_are_slashes() -> None:
    assert parse_url("http://example.com/a\\b").target == "/a/b"


@pytest.mark.parametrize(("text", "reason"), [
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://127.0.0.1:70/_stats", "scheme 'gopher'"),
    ("ftp://example.com/", "scheme 'ftp'"),
    ("javascript:alert(1)", "scheme 'javascript'"),
    ("data:text/html,hi", "scheme 'data'"),
    ("//example.com/", "not an absolute URL"),
    ("http:example.com", "without //host"),
    ("http://a@127.0.0.1/", "userinfo"),
    ("http://user:pw@example.com/", "userinfo"),
    ("http://example.com\\@127.0.0.1/", "backslash"),
    ("http://%31%32%37.0.0.1/", "forbidden character"),
    ("http://exa mple.com/", "forbidden character"),
    ("http://example.com/\r\nX: y", "control character"),
    ("http://foo.0x7f/", "ends in a number"),
    ("http://1.2.3.4.5/", "ends in a number"),
    ("http://08.0.0.1/", "invalid IPv4"),
    ("http://4294967296/", "invalid IPv4"),
    ("http://[fe80::1%25eth0]/", "zone id"),
    ("http://[::1/", "unterminated"),
    ("http://[zz::1]/", "invalid IPv6"),
    ("http://example.com:0/", "invalid port"),
    ("http://example.com:65536/", "invalid port"),
    ("http://example.com:+80/", "invalid port"),
    ("http://:80/", "without a host"),
    ("http://a..b/", "invalid host name"),
    ("http://" + "a" * 64 + ".com/", "invalid host name"),
    ("http://example.com/" + "a" * MAX_URL_CHARS, "longer than"),
])
def test_refused(text: str, reason: str) -> None:
    with pytest.raises(PreviewRefusedError) as refused:
        parse_url(text)
    assert reason in refused.value.reason


def test_check_port_allows_defaults_and_configured_ports_only() -> None:
    check_port(parse_url("http://example.com/"), ())
    check_port(parse_url("https://example.com/"), ())
    check_port(parse_url("http://example.com:8080/"), (8080,))
    for text in ("http://example.com:8080/", "http://example.com:443/",
                 "https://example.com:80/", "http://example.com:22/"):
        with pytest.raises(PreviewRefusedError, match="is not fetched"):
            check_port(parse_url(text), ())


def test_join_resolves_relative_references_then_parses_strictly() -> None:
    base = parse_url("https://example.com/a/b?c")
    assert str(join_url(base, "img.png")) == "https://example.com/a/img.png"
    assert str(join_url(base, "/x")) == "https://example.com/x"
    assert str(join_url(base, "//0x7f.1/y")) == "https://127.0.0.1/y"
    assert str(join_url(base, "  ../z  ")) == "https://example.com/z"
    with pytest.raises(PreviewRefusedError, match="scheme 'javascript'"):
        join_url(base, "javascript:alert(1)")


def test_the_percent_encoded_form_is_bounded_too() -> None:
    assert len(parse_url("http://example.com/" + "\u00e9" * 600).target) == 3601  # %C3%A9
    with pytest.raises(PreviewRefusedError, match="once percent-encoded"):
        parse_url("http://example.com/" + "\u4e2d" * 2000)
