"""Requests and responses as the REST API sees them, and its one error table.

HTTP/1.1 and HTTP/2 handlers (transport) build an `ApiRequest` and write the
`ApiResponse` back; every error leaves as RFC 9457 problem+json from
`PROBLEMS`, which also feeds the OpenAPI document.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs

from appliance.errors import (
    ApplianceError,
    AuthError,
    BusyError,
    ConflictError,
    ForbiddenError,
    ImageBusyError,
    NotFoundError,
    PreviewFetchError,
    QuotaError,
    StorageUnavailableError,
    TooManyRequestsError,
    UsageError,
)
from appliance.ratelimit import RATE_PER_S

PROBLEM_JSON = b"application/problem+json"
JSON = b"application/json"


class BodyStream(Protocol):
    """A request body read as it arrives (routes declared ``stream=True``: uploads).

    The transport hands the request over when its headers arrive; the body's
    bytes wait in a small bounded buffer, and while the handler does not read,
    the client is not read from (HTTP/1.1) or gets no flow-control credit
    (HTTP/2).  Nothing beyond that buffer is accepted before the handler's
    first `read`, which it makes only once the caller is authenticated: an
    ``Expect: 100-continue`` is answered then, and HTTP/2's window is opened.
    """

    #: The declared length (Content-Length), or None (chunked, or HTTP/2 without one).
    length: int | None

    async def read(self) -> bytes:
        """The bytes received since the last call (at most a few hundred KiB);
        b"" once the body is complete.

        Raises:
            BodyAbortedError: the client went away, reset the stream, or stopped
                sending for longer than the request deadline.
        """
        ...


@dataclass(slots=True)
class ApiRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[bytes, bytes]
    body: bytes
    #: The connection's transport (opaque here): the edge counts auth failures by it.
    connection: Any = None
    #: Routes declared ``stream=True`` read their body here (`body` is then empty).
    stream: BodyStream | None = None


def parse_query(query: str) -> dict[str, str]:
    """A request target's query string as a dict; the last value of a repeated name wins."""
    if not query:
        return {}  # the usual case, and parse_qs costs a few us even on nothing
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


@dataclass(slots=True)
class ApiResponse:
    status: int
    body: bytes = b""
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: A body too large to hold (a download): `length` bytes produced in chunks.
    #: The transport writes them as the client's window and its own output
    #: high-water mark allow, and closes the iterator if the client goes away.
    stream: AsyncIterator[bytes] | None = None
    length: int = 0

    @property
    def body_length(self) -> int:
        return self.length if self.stream is not None else len(self.body)


class ApiError(ApplianceError):
    """An answer other than success: a status, a title, a detail."""

    def __init__(self, status: int, title: str, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


#: appliance error type -> (HTTP status, title).  The first match wins.
PROBLEMS: list[tuple[type[ApplianceError], int, str]] = [
    (AuthError, 401, "unauthorized"),
    (ForbiddenError, 403, "forbidden"),
    (QuotaError, 413, "content too large"),
    (TooManyRequestsError, 429, "too many requests"),
    (ImageBusyError, 503, "busy"),
    (BusyError, 503, "busy"),
    (PreviewFetchError, 502, "bad gateway"),
    (NotFoundError, 404, "not found"),
    (ConflictError, 409, "conflict"),
    (UsageError, 422, "invalid request"),
    (StorageUnavailableError, 503, "storage unavailable"),
]


def ok(status: int, doc: Any) -> ApiResponse:
    return ApiResponse(status, json.dumps(doc, separators=(",", ":")).encode())


def problem(status: int, title: str, detail: str = "", **extra: Any) -> ApiResponse:
    doc: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        doc["detail"] = detail
    doc.update(extra)
    headers = [(b"www-authenticate", b'Bearer realm="tidings"')] if status == 401 else []
    return ApiResponse(status, json.dumps(doc).encode(), PROBLEM_JSON, headers)


def rate_limited() -> ApiResponse:
    """The answer to a request past its connection's request rate (`RATE_PER_S`): 429
    with Retry-After (RFC 6585 §4), a second, when the bucket has refilled well past one."""
    return from_error(TooManyRequestsError(
        f"at most {RATE_PER_S:.0f} requests/s per connection", retry_after_s=1.0))


def from_error(exc: ApplianceError) -> ApiResponse:
    """The problem+json answer for an appliance error."""
    if isinstance(exc, ApiError):
        return problem(exc.status, exc.title, exc.detail, **exc.extra)
    for kind, status, title in PROBLEMS:
        if isinstance(exc, kind):
            extra: dict[str, Any] = {}
            if isinstance(exc, QuotaError):
                extra = {"limit": exc.limit, "allowed": exc.allowed}
            response = problem(status, title, str(exc), **extra)
            if isinstance(exc, TooManyRequestsError | BusyError | ImageBusyError):
                response.headers.append(
                    (b"retry-after", str(max(1, round(exc.retry_after_s))).encode()))
            return response
    return problem(500, "internal error", "the server could not complete the request")
