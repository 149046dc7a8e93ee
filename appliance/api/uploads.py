"""``/v1/uploads``: resumable uploads with tus 1.0 (core, creation, termination).

The protocol mobile SDKs already speak (TUSKit, tus-android-client,
tus-js-client): POST creates an upload of ``Upload-Length`` bytes, PATCH
appends at ``Upload-Offset``, HEAD says how much arrived, DELETE drops it.  An
upload's id is the file's id: once whole it is ``/v1/files/{id}``.  A PATCH
cut by a lost connection keeps what arrived; the client asks HEAD and goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from appliance.api.files import file_doc, files
from appliance.api.http import ApiError, ApiResponse, ok
from appliance.errors import ConflictError
from appliance.media.files import FileService
from appliance.media.tus import (
    OFFSET_CONTENT_TYPE,
    TUS_VERSION,
    TusError,
    check_version,
    header_int,
    options_headers,
    parse_metadata,
)
from appliance.storage.models import FileRecord

if TYPE_CHECKING:
    from appliance.api.v1 import Call

_TUS = (b"tus-resumable", TUS_VERSION.encode())


def _tus_error(exc: TusError) -> ApiError:
    return ApiError(exc.status, "tus", str(exc))


class _NoBody:
    length: int | None = 0

    async def read(self) -> bytes:
        return b""


async def _owned_upload(call: Call, service: FileService) -> FileRecord:
    """The caller's upload named in the path, after the tus version check (HEAD, DELETE)."""
    assert call.user is not None
    try:
        check_version(call.request.headers.get(b"tus-resumable"))
    except TusError as exc:
        raise _tus_error(exc) from None
    return await service.owned_upload(call.user, call.params["id"])


async def options(call: Call) -> ApiResponse:
    """Discovery (tus §OPTIONS): no credential needed."""
    return ApiResponse(204, headers=options_headers(files(call).config.max_file_bytes))


async def create(call: Call) -> ApiResponse:
    service = files(call)
    assert call.user is not None
    headers = call.request.headers
    try:
        check_version(headers.get(b"tus-resumable"))
        if b"upload-defer-length" in headers:
            raise TusError("Upload-Defer-Length is not supported: send Upload-Length")
        length = header_int(headers.get(b"upload-length"), "Upload-Length")
        metadata = parse_metadata(headers.get(b"upload-metadata"))
    except TusError as exc:
        raise _tus_error(exc) from None
    record = await service.create(
        call.user, length, metadata.get("filetype", metadata.get("type", "")),
        metadata.get("filename", metadata.get("name", "file")))
    if length == 0:  # complete as created: tus clients send no PATCH for an empty file
        await service.receive(record, _NoBody(), 0)
    return ApiResponse(201, headers=[(b"location", f"/v1/uploads/{record.file_id}".encode()),
                                     _TUS])


async def status(call: Call) -> ApiResponse:
    service = files(call)
    record = await _owned_upload(call, service)
    # Once complete, `received` is the declared length (an image's stored copy is
    # re-encoded: its size differs), so a tus client sees offset == length: done.
    length = record.received if record.complete else record.size
    return ApiResponse(200, headers=[(b"upload-offset", str(record.received).encode()),
                                     (b"upload-length", str(length).encode()),
                                     (b"cache-control", b"no-store"), _TUS])


async def append(call: Call) -> ApiResponse:
    service = files(call)
    assert call.user is not None
    assert call.request.stream is not None
    headers = call.request.headers
    try:
        check_version(headers.get(b"tus-resumable"))
        if headers.get(b"content-type", b"").split(b";")[0].strip() != OFFSET_CONTENT_TYPE:
            raise TusError(f"Content-Type must be {OFFSET_CONTENT_TYPE.decode()}", status=415)
        offset = header_int(headers.get(b"upload-offset"), "Upload-Offset")
    except TusError as exc:
        raise _tus_error(exc) from None
    record = await service.owned_upload(call.user, call.params["id"])
    length = call.request.stream.length
    if length is not None and offset == record.received and not record.complete \
            and offset + length > record.size:  # (else `receive` says 409)
        # Refused before a byte is read (tusd answers 413 too); a body that turns out
        # longer without saying so is cut by `FileService.receive` (422).
        raise ApiError(413, "content too large",
                       f"Upload-Offset {offset} + Content-Length {length} passes the"
                       f" upload's {record.size} bytes")
    try:
        record = await service.receive(record, call.request.stream, offset)
    except ConflictError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    response = ApiResponse(204, headers=[(b"upload-offset", str(record.received).encode()),
                                         _TUS])
    if record.complete:
        # Not tus, but saves the client a request: where the finished file is.
        response.headers.append((b"location", f"/v1/files/{record.file_id}".encode()))
    return response


async def terminate(call: Call) -> ApiResponse:
    service = files(call)
    record = await _owned_upload(call, service)
    await service.discard(record)
    return ApiResponse(204, headers=[_TUS])


async def describe(call: Call) -> ApiResponse:
    """The upload as JSON (not tus): what a client shows while it resumes."""
    service = files(call)
    assert call.user is not None
    record = await service.owned_upload(call.user, call.params["id"])
    return ok(200, file_doc(record))


#: Registered in `appliance.api.v1.ROUTES` (as `Route(**spec)`).
UPLOAD_ROUTES: list[dict[str, Any]] = [
    {"method": "OPTIONS", "pattern": "/v1/uploads", "handler": options, "auth": False,
     "status": 204, "summary": "tus discovery: version, extensions, maximum size"},
    {"method": "POST", "pattern": "/v1/uploads", "handler": create, "user": True,
     "status": 201, "summary": "tus creation: Upload-Length and Upload-Metadata (access token)"},
    {"method": "HEAD", "pattern": "/v1/uploads/{id}", "handler": status, "user": True,
     "summary": "tus: Upload-Offset, the bytes received so far"},
    {"method": "GET", "pattern": "/v1/uploads/{id}", "handler": describe, "user": True,
     "summary": "An upload's state as JSON"},
    {"method": "PATCH", "pattern": "/v1/uploads/{id}", "handler": append, "user": True,
     "stream": True, "status": 204,
     "summary": "tus: append at Upload-Offset (application/offset+octet-stream)"},
    {"method": "DELETE", "pattern": "/v1/uploads/{id}", "handler": terminate, "user": True,
     "status": 204, "summary": "tus termination: drop an upload"},
]
