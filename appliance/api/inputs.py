"""Where REST input enters: JSON bodies, numbers, path segments and page sizes.

Every value a client sends is checked here, before any layer below sees it
(issue 12): a malformed or out-of-range value is a 400/422 problem+json that
names the field, never a 5xx with a traceback, and never a value wrapped or
truncated by the store.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar
from urllib.parse import unquote_to_bytes

from appliance.api.http import ApiError
from appliance.errors import UsageError

T = TypeVar("T")

#: The largest page a listing returns (`limit`).
MAX_PAGE = 1000
#: Digits a decimal integer in a path or query may have: enough for 2**64, far
#: below Python's int-string conversion limit (4300 digits, then ValueError).
_MAX_DIGITS = 20


def _malformed(detail: str) -> NoReturn:
    raise ApiError(400, "malformed JSON", detail)


def _no_constant(name: str) -> NoReturn:
    _malformed(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object (an empty body is ``{}``).

    Raises:
        ApiError: 400, see `parse_json`.
    """
    doc = parse_json(body)
    if not isinstance(doc, dict):
        _malformed("the body must be a JSON object")
    return doc


def parse_json(body: bytes) -> dict[str, Any] | list[Any]:
    """A request body as a JSON object or array (an empty body is ``{}``).

    Raises:
        ApiError: 400 for anything that is not one JSON object of valid
            Unicode: bad syntax, invalid UTF-8, NaN, an integer beyond Python's
            conversion limit, nesting too deep to parse, a lone surrogate.
    """
    try:
        doc = json.loads(body or b"{}", parse_constant=_no_constant)
    except RecursionError:
        _malformed("the document is nested too deeply")
    except (ValueError, UnicodeDecodeError) as exc:  # ValueError: also 5000-digit numbers
        _malformed(str(exc)[:200])
    if not isinstance(doc, dict | list):
        _malformed("the body must be a JSON object or array")
    # A lone surrogate can only come from a \u escape (UTF-8 cannot carry one),
    # so only a body with an escape pays for the walk.
    if b"\\u" in body or b"\\U" in body:
        _check_unicode(doc)
    return doc


def _check_unicode(doc: Any) -> None:
    """Refuse strings with lone surrogates anywhere in `doc` (iteratively: no depth limit)."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                _encodable(key)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            _encodable(item)


def _encodable(text: str) -> None:
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            _malformed("a string holds a lone surrogate (\\ud800-\\udfff), which is not"
                       " Unicode text")


def int_field(doc: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    """`doc[name]`, an integer in low..high (`default` when absent).

    Raises:
        ApiError: 422 naming the field: not an integer (booleans and floats
            are not), or out of range.
    """
    value = doc.get(name, default)
    if type(value) is not int or not low <= value <= high:
        raise ApiError(422, "invalid request", f"{name!r} must be an integer {low}..{high}",
                       field=name)
    return value


def decimal(text: str, high: int) -> int | None:
    """A decimal integer 0..`high` from a path or query, or None when it is not one."""
    if not (0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= high else None


def page_limit(query: dict[str, str], default: int = 100) -> int:
    """The `limit` query parameter: 1..MAX_PAGE.

    Raises:
        ApiError: 422 naming the field.
    """
    text = query.get("limit")
    if text is None:
        return default
    value = decimal(text, MAX_PAGE)
    if value is None or value < 1:
        raise ApiError(422, "invalid request", f"limit must be 1..{MAX_PAGE}", field="limit")
    return value


def checked(check: Callable[[T], T], value: T, field: str) -> T:
    """`check(value)`, its `UsageError` turned into a 422 naming `field`."""
    try:
        return check(value)
    except UsageError as exc:
        raise ApiError(422, "invalid request", str(exc), field=field) from None


def path_segment(raw: str) -> str:
    """One path segment, percent-decoded as UTF-8 (RFC 3986 §2.1, §3.3).

    The transport hands the request target over as Latin-1 text (one
    character per byte), so raw UTF-8 bytes and %XX escapes both decode
    here; `a%2Fb` is the address ``a/b``.

    Raises:
        ApiError: 400 when the bytes are not UTF-8.
    """
    if "%" not in raw and raw.isascii():
        return raw
    try:
        return unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise ApiError(400, "bad request",
                       "a path segment is not UTF-8 once percent-decoded") from None
