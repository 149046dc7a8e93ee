"""What a page says about itself: OpenGraph, Twitter cards, then plain HTML.

The parser is the standard library's `html.parser` (a tolerant tokenizer,
no dependency, nothing compiled to ship in the one-file executable): the
head of a page needs tokens, not a tree.  Its work is bounded: it stops at
``</head>`` or ``<body>`` (where the metadata ends) and after `MAX_TOKENS`
tokens; a start tag longer than `MAX_TAG_CHARS` is skipped unread (its
attributes cost ~10 us each); the text (at most ``max_html_bytes``) is fed
in one call and never ``close()``d, so an unterminated construct is scanned
once and then waits for input that never comes (``close()`` is quadratic on
unterminated constructs in the CPython we ship, gh-135462, and feeding in
pieces rescans a pending construct at every piece).

Precedence (the Open Graph protocol, then Twitter's card markup, then HTML):
title ``og:title`` > ``twitter:title`` > ``<title>``; description
``og:description`` > ``twitter:description`` > ``<meta name=description>``;
image ``og:image:secure_url`` > ``og:image`` (``:url``) > ``twitter:image``;
canonical ``<link rel=canonical>`` > ``og:url`` > the page's final URL.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser

from appliance.errors import PreviewRefusedError
from appliance.media.previews.url import PreviewUrl, join_url

MAX_TITLE_CHARS = 300
MAX_DESCRIPTION_CHARS = 1000
MAX_SITE_NAME_CHARS = 300
#: Tokens read at most (start and end tags, attributes, comments, declarations):
#: a real head has tens to a few hundred.
MAX_TOKENS = 4000
#: A start tag longer than this (an inline data: URI...) is skipped, not tokenized.
MAX_TAG_CHARS = 8 * 1024
#: Characters kept of any one value before cleaning (bounded memory).
_KEEP_CHARS = 4096

_TITLE_KEYS = ("og:title", "twitter:title")
_DESCRIPTION_KEYS = ("og:description", "twitter:description", "description")
_IMAGE_KEYS = ("og:image:secure_url", "og:image", "og:image:url", "twitter:image",
               "twitter:image:src")
_WANTED = frozenset((*_TITLE_KEYS, *_DESCRIPTION_KEYS, *_IMAGE_KEYS, "og:site_name", "og:url"))
# Bidirectional overrides and isolates reorder the text around them (a title
# could show a different file extension or URL than it holds: CVE-2021-42574).
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f]")


@dataclass(frozen=True, slots=True)
class PageMeta:
    """What one page's head says; absent fields are None."""

    title: str | None
    description: str | None
    site_name: str | None
    canonical_url: str | None  # absolute http(s), canonical form
    image_url: PreviewUrl | None  # absolute, not yet checked or fetched


class _HeadDoneError(Exception):
    """The head has been read (or the tag budget spent): stop tokenizing."""


class _HeadParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.title: list[str] = []
        self.title_chars = 0
        self.in_title = False
        self.seen_title = False
        self.canonical: str | None = None
        self.base: str | None = None
        self.tokens = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._count(1 + len(attrs))
        if tag == "body":
            raise _HeadDoneError
        if tag == "title" and not self.seen_title:
            self.in_title = self.seen_title = True
        elif tag == "meta":
            self._meta(attrs)
        elif tag == "link":
            values = {k: v for k, v in attrs if v is not None}
            rels = values.get("rel", "").lower().split()
            if "canonical" in rels and self.canonical is None and "href" in values:
                self.canonical = values["href"][:_KEEP_CHARS]
        elif tag == "base" and self.base is None:
            href = dict(attrs).get("href")
            if href:
                self.base = href[:_KEEP_CHARS]

    def parse_starttag(self, i: int) -> int:
        # An internal of HTMLParser (stable since Python 2), guarded here: a tag
        # with no ">" within MAX_TAG_CHARS is skipped to its ">" or ends the parse.
        rawdata = self.rawdata
        if rawdata.find(">", i, i + MAX_TAG_CHARS) < 0 and len(rawdata) - i > MAX_TAG_CHARS:
            end = rawdata.find(">", i)
            if end < 0:
                raise _HeadDoneError
            return end + 1
        return int(super().parse_starttag(i))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        self._count(1)
        if tag == "title":
            self.in_title = False
        elif tag == "head":
            raise _HeadDoneError

    def handle_data(self, data: str) -> None:
        if self.in_title and self.title_chars < _KEEP_CHARS:
            self.title.append(data[:_KEEP_CHARS - self.title_chars])
            self.title_chars += len(self.title[-1])

    def handle_comment(self, data: str) -> None:
        self._count(1)

    def handle_decl(self, decl: str) -> None:
        self._count(1)

    def handle_pi(self, data: str) -> None:
        self._count(1)

    def unknown_decl(self, data: str) -> None:
        self._count(1)

    def _count(self, tokens: int) -> None:
        self.tokens += tokens
        if self.tokens > MAX_TOKENS:
            raise _HeadDoneError

    def _meta(self, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v for k, v in attrs if v is not None}
        content = values.get("content")
        if content is None:
            return
        # Open Graph uses property=, Twitter name=; pages mix them up, so either counts.
        for attr in ("property", "name"):
            key = values.get(attr, "").strip().lower()
            if key in _WANTED and key not in self.meta:
                self.meta[key] = content[:_KEEP_CHARS]


def clean_text(text: str, limit: int) -> str | None:
    """One line of display text: controls and bidi overrides gone, whitespace collapsed,
    at most `limit` characters (cut with an ellipsis); None when nothing is left."""
    text = _BIDI_CONTROLS.sub("", text)
    text = "".join(c if unicodedata.category(c)[0] != "C" else " " for c in text)
    text = " ".join(text.split())
    if not text:
        return None
    if len(text) > limit:
        text = text[:limit - 1].rstrip() + "\u2026"
    return text


def parse_head(html: str, page_url: PreviewUrl) -> PageMeta:
    """The preview fields of `html`, relative URLs resolved against the page (or its <base>)."""
    parser = _HeadParser()
    with contextlib.suppress(_HeadDoneError):
        parser.feed(html)  # never close(): see the module docstring
    meta = parser.meta
    base = _url(page_url, parser.base) or page_url

    def first(keys: tuple[str, ...]) -> str | None:
        return next((meta[k] for k in keys if k in meta and meta[k].strip()), None)

    title = first(_TITLE_KEYS) or "".join(parser.title)
    canonical = _url(base, parser.canonical) or _url(base, meta.get("og:url"))
    image = next((u for u in (_url(base, meta.get(k)) for k in _IMAGE_KEYS) if u), None)
    return PageMeta(
        title=clean_text(title, MAX_TITLE_CHARS),
        description=clean_text(first(_DESCRIPTION_KEYS) or "", MAX_DESCRIPTION_CHARS),
        site_name=clean_text(meta.get("og:site_name", ""), MAX_SITE_NAME_CHARS),
        canonical_url=str(canonical) if canonical else None,
        image_url=image)


def _url(base: PreviewUrl, reference: str | None) -> PreviewUrl | None:
    if not reference or not reference.strip():
        return None
    try:
        return join_url(base, reference)
    except PreviewRefusedError:
        return None  # a javascript:, data: or broken URL is no canonical URL nor image
