"""The head parser: precedence, cleaning, relative URLs, and bounded work on hostile markup."""

from __future__ import annotations

import time

import pytest

from appliance.media.previews.parse import (
    MAX_DESCRIPTION_CHARS,
    MAX_TITLE_CHARS,
    clean_text,
    parse_head,
)
from appliance.media.previews.url import parse_url

PAGE = parse_url("https://news.example/2026/story.html")


def test_opengraph_wins_and_relative_urls_resolve_against_the_page() -> None:
    meta = parse_head("""<!doctype html><html><head>
        <title>Plain title</title>
        <meta name="description" content="plain description">
        <meta property="og:title" content="OG &amp; title">
        <meta property="og:description" content="OG description">
        <meta property="og:site_name" content="News">
        <meta property="og:image" content="/img/cover.jpg">
        <meta property="og:url" content="https://news.example/story">
        <meta name="twitter:title" content="Twitter title">
        </head><body><h1>x</h1></body></html>""", PAGE)
    assert meta.title == "OG & title"
    assert meta.description == "OG description"
    assert meta.site_name == "News"
    assert meta.canonical_url == "https://news.example/story"
    assert str(meta.image_url) == "https://news.example/img/cover.jpg"


def test_twitter_card_then_plain_html() -> None:
    meta = parse_head("""<head><title>Plain</title>
        <META NAME="twitter:title" CONTENT="Card title">
        <meta name="twitter:description" content="Card text">
        <meta name="twitter:image" content="pic.png">
        <link rel="canonical" href="../canon">""", PAGE)
    assert (meta.title, meta.description) == ("Card title", "Card text")
    assert str(meta.image_url) == "https://news.example/2026/pic.png"
    assert meta.canonical_url == "https://news.example/canon"
    plain = parse_head("<title>\n  Just  a\ttitle </title><meta name=description content=d>",
                       PAGE)
    assert (plain.title, plain.description, plain.site_name) == ("Just a title", "d", None)
    assert plain.image_url is None
    assert plain.canonical_url is None


def test_secure_url_first_base_href_and_bad_urls_ignored() -> None:
    meta = parse_head("""<head><base href="https://cdn.example/assets/">
        <meta property="og:image" content="javascript:alert(1)">
        <meta property="og:image:secure_url" content="a.png">
        <link rel="canonical" href="data:text/html,x">""", PAGE)
    assert str(meta.image_url) == "https://cdn.example/assets/a.png"
    assert meta.canonical_url is None


def test_metadata_after_the_head_is_not_read() -> None:
    meta = parse_head('<head><title>t</title></head><meta property="og:title" content="late">',
                      PAGE)
    assert meta.title == "t"
    body = parse_head('<title>t</title><body><meta property="og:title" content="late">', PAGE)
    assert body.title == "t"


def test_strings_are_cleaned_and_bounded() -> None:
    meta = parse_head(f'<title>{"t" * 5000}</title>'
                      f'<meta name=description content="{"d " * 3000}">', PAGE)
    assert meta.title is not None
    assert len(meta.title) == MAX_TITLE_CHARS
    assert meta.title.endswith("\u2026")
    assert meta.description is not None
    assert len(meta.description) <= MAX_DESCRIPTION_CHARS
    # Controls and bidi overrides go (a title must not reorder what the client shows).
    assert clean_text("evil\u202egnp.exe\x00\x07 x", 100) == "evilgnp.exe x"
    assert clean_text(" \n\t ", 100) is None


@pytest.mark.parametrize("hostile", [
    "<!" * 500_000,  # close() would be quadratic on these (gh-135462): never called
    "<!--" + "a" * 1_000_000,
    "<a " * 330_000,  # one endless start tag
    "<meta " + 'a="b" ' * 160_000 + ">",  # 160,000 attributes
    ("<meta " + 'a="b" ' * 1300 + ">") * 130,
    "<i>" * 330_000,
    "</x>" * 250_000,
    "<!---->" * 150_000,
    "<script>" + "<" * 1_000_000,
    "&" * 1_000_000,
    "<title>" + "x&amp;" * 200_000,
    "<!DOCTYPE html [" + "<!ENTITY a 'b'>" * 60_000,
])
def test_hostile_markup_costs_bounded_time(hostile: str) -> None:
    started = time.perf_counter()
    parse_head(hostile, PAGE)
    assert time.perf_counter() - started < 0.5
