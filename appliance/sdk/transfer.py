"""The pieces of a file transfer (files.py): progress, digests, the
part file of a download, and reading what the server answers.

Nothing here speaks to the network.  Every value taken from an answer is
bounded before use: integers by their digits, documents by their size.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from appliance.sdk.errors import (
    FileAccessDeniedError,
    FileChangedError,
    FileRejectedError,
    FileTransferError,
    NoSuchFileError,
    QuotaExceededError,
    UnauthorizedError,
)
from appliance.sdk.http import Response

#: Bytes read from disk (one thread hop each), and written to disk per write.
DISK_BYTES = 256 * 1024
#: Progress callbacks at most this often (and once at the end).
PROGRESS_INTERVAL_S = 0.1
#: What the server keeps of a file name (UTF-8 bytes).
MAX_NAME_BYTES = 255
#: Answers worth another attempt (the server restarting, busy, or a tus offset race).
RETRIED_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: The longest Retry-After honoured (a server cannot park the client for a day).
MAX_RETRY_AFTER_S = 60.0
#: Digits of an integer header (Upload-Offset, Content-Length): up to 10**19.
_MAX_DIGITS = 19
_ERRORS: dict[int, type[FileTransferError]] = {
    401: UnauthorizedError, 403: FileAccessDeniedError, 404: NoSuchFileError,
    410: NoSuchFileError, 413: QuotaExceededError}

Progress = Callable[[int, int], Awaitable[None] | None]


class Delays(Protocol):
    """`Backoff` (events.py): the delay before attempt `attempt` (from 0)."""

    def delay(self, attempt: int) -> float: ...


class RetryableError(Exception):
    """One attempt failed in a way another attempt may fix (`wait_s`: the server's say)."""

    def __init__(self, error: FileTransferError, wait_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait_s = wait_s


class Meter:
    """Calls `progress(done, total)` at most every `PROGRESS_INTERVAL_S`, never backwards."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total = progress, total
        self.done = 0
        self._last = 0.0
        self._shown: tuple[int, int] | None = None

    async def update(self, done: int, *, final: bool = False) -> None:
        if self.progress is None or (done <= self.done and not final):
            return
        self.done = max(self.done, done)
        now = time.monotonic()
        shown = (self.done, self.total)
        if (final and shown != self._shown) or now - self._last >= PROGRESS_INTERVAL_S:
            self._last, self._shown = now, shown
            result = self.progress(*shown)
            if inspect.isawaitable(result):
                await result


class UploadDigest:
    """SHA-256 of a file's prefix, kept across resumed PATCHes.

    `mark` is the state at the offset the server confirmed last: a resume at
    or past it re-reads only the gap; one before it (the server lost bytes)
    starts again from the beginning.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.hash, self.position = hashlib.sha256(), 0
        self._mark = (self.hash.copy(), 0)

    def feed(self, data: bytes) -> None:
        self.hash.update(data)
        self.position += len(data)

    def confirm(self) -> None:
        self._mark = (self.hash.copy(), self.position)

    @property
    def confirmed(self) -> int:
        """The offset the server confirmed last."""
        return self._mark[1]

    async def rewind(self, offset: int) -> None:
        if offset == self.position:
            return
        state, at = self._mark if offset >= self._mark[1] else (hashlib.sha256(), 0)
        self.hash, self.position = state.copy(), at
        while self.position < offset:
            size = min(DISK_BYTES, offset - self.position)
            self.feed(await pread_exact(self.fd, size, self.position))


class PartFile:
    """A download's part file: buffered writes in a thread, its SHA-256 as it grows.

    `etag` is the content's (pinned by the caller, or the first answer's);
    `total` the file's length once an answer said it.
    """

    def __init__(self, fd: int, etag: str | None) -> None:
        self.fd = fd
        self.etag = etag
        self.total: int | None = None
        self.hash = hashlib.sha256()
        self.size = 0  # bytes received (written or buffered)
        self._buffer = bytearray()

    async def adopt(self) -> None:
        """Take a part left by an earlier call: hash what it holds."""
        size = (await asyncio.to_thread(os.fstat, self.fd)).st_size
        while self.size < size:
            data = await asyncio.to_thread(os.pread, self.fd, min(DISK_BYTES, size - self.size),
                                           self.size)
            if not data:
                break
            self.hash.update(data)
            self.size += len(data)

    async def reset(self) -> None:
        self._buffer.clear()
        await asyncio.to_thread(os.ftruncate, self.fd, 0)
        self.hash, self.size = hashlib.sha256(), 0

    async def write(self, data: bytes) -> None:
        self._buffer += data
        self.hash.update(data)
        self.size += len(data)
        if len(self._buffer) >= DISK_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            await asyncio.to_thread(os.pwrite, self.fd, data, self.size - len(data))

async def pread_exact(fd: int, size: int, at: int) -> bytes:
    """`size` bytes of the file being uploaded, read in a thread.  A disk error is
    no network failure: it must not be retried as one (nor pass as an OSError
    of the connection)."""
    try:
        data = await asyncio.to_thread(os.pread, fd, size, at)
    except OSError as exc:
        raise FileTransferError(f"reading the file failed: {exc.strerror}") from None
    if len(data) < size:
        raise FileChangedError("the file got shorter while it was being uploaded")
    return data


def header_integer(value: str | None, what: str) -> int:
    if value is None or not value.isascii() or not value.isdigit() or len(value) > _MAX_DIGITS:
        raise FileTransferError(f"the server sent no valid {what}: {str(value)[:40]!r}")
    return int(value)


def tus_metadata(name: str, content_type: str) -> bytes:
    """tus Upload-Metadata: ``key base64(value)`` pairs."""
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()
    return f"filename {b64(name)},filetype {b64(content_type)}".encode()


def upload_name(name: str) -> str:
    """What the server keeps of a name (`MAX_NAME_BYTES`; tus refuses longer values)."""
    return name.encode()[:MAX_NAME_BYTES].decode("utf-8", "ignore") or "file"


def local_name(name: str) -> str:
    """A file name from another user as a local file name: no directory, no control
    characters, not a dot file, at most `MAX_NAME_BYTES` UTF-8 bytes."""
    name = name.replace("\\", "/").rpartition("/")[2]
    name = "".join(ch for ch in name if ch.isprintable()).strip().lstrip(".")
    return upload_name(name)


def http_error(response: Response, text: bytes) -> FileTransferError:
    """The typed error of an HTTP error answer, from its problem+json (RFC 9457)."""
    try:
        doc = json.loads(text) if text else {}
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    title, detail = (_text(doc.get("title"), 200), _text(doc.get("detail"), 1000))
    status = response.status
    message = (f"HTTP {status}" + (f" {title}"[:100] if title else "")
               + (f": {detail}"[:300] if detail else ""))
    cls = _ERRORS.get(status, FileRejectedError if 400 <= status < 500 else FileTransferError)
    if cls is QuotaExceededError:
        allowed = doc.get("allowed")
        return QuotaExceededError(
            message, http_status=status, title=title, detail=detail,
            limit=_text(doc.get("limit"), 64),
            allowed=allowed if type(allowed) is int and allowed >= 0 else 0)
    return cls(message, http_status=status, title=title, detail=detail)


def retry_after(response: Response) -> float | None:
    """Retry-After in seconds (RFC 9110 §10.2.3; the date form is not used by the server)."""
    wait = response.header("retry-after")
    if wait is None or not wait.isascii() or not wait.isdigit() or len(wait) > 5:
        return None
    return min(float(wait), MAX_RETRY_AFTER_S)


def _text(value: object, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def content_range(value: str | None) -> tuple[int, int]:
    """``bytes <start>-<end>/<size>`` (RFC 9110 §14.4) -> (start, size)."""
    unit, _, spec = (value or "").partition(" ")
    span, _, size = spec.partition("/")
    start, _, end = span.partition("-")
    first, last, total = (header_integer(text, "Content-Range") for text in (start, end, size))
    if unit != "bytes" or not first <= last < total:
        raise FileTransferError(f"the server sent an invalid Content-Range: {value!r:.80}")
    return first, total


def publish(part: Path, target: Path) -> None:
    """Rename the finished part to its name, durably (the directory is synced too)."""
    os.replace(part, target)
    fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
