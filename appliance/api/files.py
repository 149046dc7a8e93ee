"""``/v1/files``: one-shot uploads, downloads with ranges, thumbnails, signed links (issue 15).

A user's app calls these with the user's access token (``Authorization:
Bearer <access token>``), or, for downloads, with a signed link's ``exp`` and
``sig`` instead.  Resumable uploads (tus) are `uploads`; pictures `pictures`.
Every download says what it is and how a browser must treat it: the stored
type, ``X-Content-Type-Options: nosniff``, a sandboxing CSP, and
``Content-Disposition: attachment`` for anything but clean images, audio and
video (RFC 6266).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from appliance.api.http import ApiError, ApiResponse, ok, problem
from appliance.errors import UsageError
from appliance.media.content import disposition
from appliance.media.files import FileService
from appliance.media.ranges import RangeNotSatisfiableError, parse_range
from appliance.storage.models import FileRecord, FileVariant, Principal

if TYPE_CHECKING:
    from appliance.api.v1 import Call

#: Downloads may be cached by the client (content-addressed: never changes), not by proxies.
_CACHE = b"private, max-age=86400"
_SANDBOX = b"sandbox; default-src 'none'"
_ONE_SHOT_NAME = "file"


def files(call: Call) -> FileService:
    service = call.api.files
    if service is None:
        raise ApiError(503, "unavailable", "files are not enabled on this server")
    return service


def file_doc(record: FileRecord, link: tuple[str, int] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": record.file_id, "name": record.name, "type": record.content_type,
        "size": record.size, "received": record.received, "complete": record.complete,
        "sha256": record.sha256.hex() if record.sha256 else None,
        "width": record.width, "height": record.height, "created_at": record.created_ms}
    if link is not None:
        doc["url"] = f"/v1/files/{record.file_id}?{link[0]}"
        doc["url_expires_at"] = link[1]
    return doc


def declared_length(call: Call) -> int:
    """Content-Length of an upload: required, so the quota is checked before any byte."""
    stream = call.request.stream
    length = stream.length if stream is not None else len(call.request.body)
    if length is None:
        raise ApiError(411, "length required", "send Content-Length (or use tus at /v1/uploads)")
    return length


async def reader(call: Call) -> tuple[Principal | None, tuple[str, str] | None]:
    """The caller of a download: a signed link's (exp, sig), else the access token's user."""
    query = call.request.query
    if "sig" in query or "exp" in query:
        return None, (query.get("exp", ""), query.get("sig", ""))
    try:
        user = await call.api.tokens.authenticate(call.request)
    except ApiError:
        call.api.on_auth(call.request.connection, False)
        raise
    call.api.on_auth(call.request.connection, True)
    return user, None


# --- handlers -------------------------------------------------------------------------------


async def upload(call: Call) -> ApiResponse:
    service = files(call)
    assert call.user is not None
    assert call.request.stream is not None
    record = await service.create(
        call.user, declared_length(call),
        call.request.headers.get(b"content-type", b"").decode("latin-1"),
        call.request.query.get("name", _ONE_SHOT_NAME))
    record = await service.receive_whole(record, call.request.stream)
    response = ok(201, file_doc(record, await service.link(record, None)))
    response.headers.append((b"location", f"/v1/files/{record.file_id}".encode()))
    return response


async def download(call: Call) -> ApiResponse:
    service = files(call)
    user, link = await reader(call)
    record = await service.readable(call.params["id"], user=user, link=link)
    assert record.sha256 is not None
    return blob_response(call, service, record, record.sha256, record.size,
                         record.content_type, disposition(record), record.name)


async def meta(call: Call) -> ApiResponse:
    service = files(call)
    assert call.user is not None
    record = await service.readable(call.params["id"], user=call.user)
    return ok(200, file_doc(record))


async def thumbnail(call: Call) -> ApiResponse:
    service = files(call)
    user, link = await reader(call)
    record = await service.readable(call.params["id"], user=user, link=link)
    variant = await service.variant(record, _size(call, service.config.thumbnail_sizes[0]),
                                    call.request.query.get("format", "webp"), square=False)
    return variant_response(call, service, variant, record.name)


async def new_link(call: Call) -> ApiResponse:
    service = files(call)
    assert call.user is not None
    record = await service.readable(call.params["id"], user=call.user)
    doc = call.json() if call.request.body.strip() else {}
    ttl = doc.get("ttl_s")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool)):
        raise ApiError(422, "invalid request", "'ttl_s' must be an integer", field="ttl_s")
    query, expires = await service.link(record, ttl)
    return ok(201, {"url": f"/v1/files/{record.file_id}?{query}", "expires_at": expires})


# --- responses ------------------------------------------------------------------------------


def _size(call: Call, default: int) -> int:
    text = call.request.query.get("size")
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 5):
        raise UsageError("size must be one of the configured sizes")
    return int(text)


def content_disposition(kind: str, name: str) -> bytes:
    """RFC 6266 with an ASCII fallback and the UTF-8 name (RFC 8187)."""
    fallback = "".join(ch if ch.isascii() and ch.isprintable() and ch not in '"\\%;'
                       else "_" for ch in name)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}".encode()


def variant_response(call: Call, service: FileService, variant: FileVariant,
                     name: str) -> ApiResponse:
    stem = name.rpartition(".")[0] or name
    return blob_response(call, service, None, variant.sha256, variant.size,
                         variant.content_type, "inline", f"{stem}.{variant.variant}")


def blob_response(call: Call, service: FileService, record: FileRecord | None, sha256: bytes,
                  size: int, content_type: str, kind: str, name: str) -> ApiResponse:
    """200, 206, 304 or 416 for a stored blob, streamed from disk."""
    headers = call.request.headers
    etag = f'"{sha256.hex()}"'
    common = [(b"etag", etag.encode()), (b"accept-ranges", b"bytes"),
              (b"x-content-type-options", b"nosniff"), (b"content-security-policy", _SANDBOX),
              (b"cache-control", _CACHE),
              (b"content-disposition", content_disposition(kind, name))]
    if headers.get(b"if-none-match", b"").decode("latin-1").strip() == etag:
        return ApiResponse(304, headers=common[:2])
    range_header = headers.get(b"range")
    if_range = headers.get(b"if-range")
    try:
        wanted = parse_range(range_header.decode("latin-1") if range_header else None, size,
                             if_range=if_range.decode("latin-1") if if_range else None, etag=etag)
    except RangeNotSatisfiableError:
        response = problem(416, "range not satisfiable", f"the file has {size} bytes")
        response.headers.append((b"content-range", f"bytes */{size}".encode()))
        return response
    if wanted is None:
        return ApiResponse(200, content_type=content_type.encode(), headers=common,
                           stream=service.read(sha256, None, size), length=size)
    common.append((b"content-range", wanted.content_range(size)))
    return ApiResponse(206, content_type=content_type.encode(), headers=common,
                       stream=service.read(sha256, wanted, size), length=wanted.length)


_FILE = {"type": "object", "properties": {
    "id": {"type": "string"}, "name": {"type": "string"}, "type": {"type": "string"},
    "size": {"type": "integer"}, "sha256": {"type": ["string", "null"]},
    "width": {"type": "integer"}, "height": {"type": "integer"},
    "url": {"type": "string", "description": "a signed link (media.link_ttl_s)"}}}

#: Registered in `appliance.api.v1.ROUTES` (as `Route(**spec)`).
FILE_ROUTES: list[dict[str, Any]] = [
    {"method": "POST", "pattern": "/v1/files", "handler": upload, "user": True, "stream": True,
     "status": 201, "query": ("name",), "response": _FILE,
     "summary": "Upload a file in one request (Content-Length required; access token)"},
    {"method": "GET", "pattern": "/v1/files/{id}", "handler": download, "auth": False,
     "query": ("exp", "sig"),
     "summary": "Download a file (Range supported): access token, or a signed link"},
    {"method": "GET", "pattern": "/v1/files/{id}/meta", "handler": meta, "user": True,
     "response": _FILE, "summary": "A file's name, type, size and digest (access token)"},
    {"method": "GET", "pattern": "/v1/files/{id}/thumbnail", "handler": thumbnail,
     "auth": False, "query": ("size", "format", "exp", "sig"),
     "summary": "A thumbnail of an image file (media.thumbnail_sizes; webp or jpeg)"},
    {"method": "POST", "pattern": "/v1/files/{id}/links", "handler": new_link, "user": True,
     "status": 201,
     "body": {"type": "object", "properties": {"ttl_s": {"type": "integer", "minimum": 1}}},
     "response": {"type": "object", "properties": {"url": {"type": "string"},
                                                   "expires_at": {"type": "integer"}}},
     "summary": "A signed link to a file that works without a token until it expires"},
]
