"""RFC 9110 §14 range requests for downloads, as pure functions.

One range per request: a multi-range request is answered with the whole
file (§14.2 lets a server ignore Range), which also rules out the
overlapping-ranges amplification of CVE-2011-3192.  Numbers are digits only
and at most 19 of them, so no request makes the server parse a huge integer.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.errors import UsageError

_MAX_DIGITS = 19


class RangeNotSatisfiableError(UsageError):
    """The range starts past the end of the file: answer 416 with ``bytes */size``."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the file has {size} bytes")
        self.size = size


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> bytes:
        return f"bytes {self.start}-{self.end}/{size}".encode()


def _number(text: str) -> int | None:
    text = text.strip()
    if not text or len(text) > _MAX_DIGITS or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def parse_range(header: str | None, size: int, *, if_range: str | None = None,
                etag: str = "") -> ByteRange | None:
    """The one range to send, or None for the whole file.

    Args:
        header: the Range field; None, another unit, a multi-range or an
            invalid one mean the whole file (§14.2).
        if_range: the If-Range field; a range is honoured only if it is our
            (strong) ETag (§13.1.5); a date never matches (we send none).

    Raises:
        RangeNotSatisfiableError: a valid range that selects no byte (§15.5.17).
    """
    if header is None or (if_range is not None and if_range.strip() != etag):
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    if not first.strip():  # "-N": the last N bytes
        suffix = _number(last)
        if suffix is None:
            return None
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiableError(size)
        return ByteRange(max(0, size - suffix), size - 1)
    start = _number(first)
    end = _number(last) if last.strip() else start
    if start is None or end is None or end < start:
        return None  # invalid: ignored (§14.1.1)
    if start >= size:
        raise RangeNotSatisfiableError(size)
    return ByteRange(start, min(end, size - 1) if last.strip() else size - 1)
