"""Files over the server's HTTP routes (issue 15): resumable uploads, resumable
downloads, signed links.  `Client.send_file` and friends delegate here.

Uploads speak tus 1.0 (https://tus.io/protocols/resumable-upload): ``POST
/v1/uploads`` creates the upload, then each `CHUNK_BYTES` goes in a PATCH of
its own, read from the file as the socket takes it (memory stays flat for any
size).  A cut connection loses at most the PATCH in flight: the SDK asks
``HEAD`` how much arrived and goes on from there, after a backoff, up to
`ATTEMPTS` failures in a row without progress.

Downloads stream to ``<path>.part``; after a cut they resume with ``Range:
bytes=<have>-`` and ``If-Range: <etag>`` (RFC 9110 §14.2, §13.1.5: the ETag
is the content's SHA-256, so a range of other bytes is never appended),
check the SHA-256, fsync, and rename the part to its path.

Every answer the server gives is checked before use: ids against the file-id
format, offsets and lengths as bounded integers, JSON documents bounded in
size; problem+json errors become the typed `FileTransferError` subclasses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from appliance.protocol.attachments import is_file_id
from appliance.sdk.errors import (
    FileCorruptError,
    FileTransferError,
    NoSuchFileError,
    TransferInterruptedError,
)
from appliance.sdk.http import MAX_DOCUMENT_BYTES, Endpoint, HttpConnection, Response
from appliance.sdk.models import FileInfo
from appliance.sdk.transfer import (
    DISK_BYTES,
    RETRIED_STATUSES,
    Delays,
    Meter,
    PartFile,
    Progress,
    RetryableError,
    UploadDigest,
    content_range,
    header_integer,
    http_error,
    local_name,
    pread_exact,
    publish,
    retry_after,
    tus_metadata,
    upload_name,
)

#: Bytes of one PATCH: what a cut connection can cost at most.
CHUNK_BYTES = 4 * 1024 * 1024
#: Failures in a row, without a byte of progress, before a transfer gives up.
ATTEMPTS = 8
TUS_VERSION = b"1.0.0"
_TUS = (b"tus-resumable", TUS_VERSION)
_OFFSET_STREAM = (b"content-type", b"application/offset+octet-stream")

__all__ = ["ATTEMPTS", "CHUNK_BYTES", "FileTransfer", "Progress"]


class FileTransfer:
    """The file routes of one server, for one user's token (`Client` holds one)."""

    def __init__(self, endpoint: Endpoint, backoff: Delays, *, attempts: int = ATTEMPTS,
                 chunk_bytes: int = CHUNK_BYTES) -> None:
        if attempts < 1 or chunk_bytes < 1:
            raise ValueError("attempts and chunk_bytes must be positive")
        self.endpoint = endpoint
        self.backoff = backoff
        self.attempts = attempts
        self.chunk_bytes = chunk_bytes
        self._idle: HttpConnection | None = None

    def close(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.close()

    # --- uploads ----------------------------------------------------------------------------

    async def upload(self, path: str | os.PathLike[str], *, name: str | None = None,
                     content_type: str | None = None, progress: Progress | None = None
                     ) -> FileInfo:
        """Upload the file at `path`; returns the server's `FileInfo` once it is whole.

        Raises:
            QuotaExceededError: too large, or the app's storage is full.
            FileRejectedError: refused as sent (a damaged image).
            FileCorruptError: the server stored other bytes than the file's.
            FileChangedError: the file shrank while it was read.
            TransferInterruptedError: `attempts` failures in a row (the upload is
                kept on the server until it expires, but this call cannot resume it).
            OSError: the file cannot be read.
        """
        source = Path(path)
        fd = await asyncio.to_thread(os.open, source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            total = (await asyncio.to_thread(os.fstat, fd)).st_size
            shown = upload_name(name if name is not None else source.name)
            kind = content_type or mimetypes.guess_type(shown)[0] or "application/octet-stream"
            meter = Meter(progress, total)
            location = await self._retrying(lambda: self._create(total, shown, kind))
            digest = UploadDigest(fd)
            try:
                await self._retrying(lambda: self._send_all(location, fd, total, digest, meter),
                                     lambda: digest.confirmed)
                info = await self.info(location.rpartition("/")[2])
                if info.width == 0 and info.sha256 != digest.hash.hexdigest():
                    # Only images are changed by the server (cleaned): anything else is ours.
                    raise FileCorruptError(f"the server stored {info.sha256} for a file whose"
                                           f" SHA-256 is {digest.hash.hexdigest()}")
            except FileTransferError:
                await self._abandon(location)
                raise
            await meter.update(total, final=True)
        finally:
            os.close(fd)
        return info

    async def _abandon(self, location: str) -> None:
        """tus termination of an upload that will not be finished: its bytes stop
        counting against the app's storage now, not when it expires.  Best effort."""
        with contextlib.suppress(FileTransferError):
            _, conn = await self._exchange("DELETE", location, [_TUS])
            await conn.discard()
            self._keep(conn)

    async def _create(self, total: int, name: str, content_type: str) -> str:
        response, conn = await self._exchange("POST", "/v1/uploads", [
            _TUS, (b"upload-length", str(total).encode()),
            (b"upload-metadata", tus_metadata(name, content_type))])
        await self._finish(conn, response, 201)
        location = response.header("location") or ""
        if not (location.startswith("/v1/uploads/") and is_file_id(location[12:])):
            raise FileTransferError(f"the server sent no valid upload location: {location[:80]!r}")
        return location

    async def _send_all(self, location: str, fd: int, total: int, digest: UploadDigest,
                        meter: Meter) -> None:
        """PATCH from the server's offset to the end (one attempt: `RetryableError`
        when another may do better)."""
        offset = 0
        if digest.position:  # a retry: where the server is
            offset, complete = await self._state(location, total)
            if complete:
                return
        await digest.rewind(offset)
        while True:
            end = min(total, offset + self.chunk_bytes)
            response, conn = await self._exchange(
                "PATCH", location, [_TUS, _OFFSET_STREAM,
                                    (b"upload-offset", str(offset).encode())],
                chunks=self._chunks(fd, offset, end, digest, meter), length=end - offset,
                expect_continue=True)
            await self._finish(conn, response, 204)
            if response.header("location") == f"/v1/files/{location[12:]}":
                return  # complete (an image's offset is then its cleaned copy's size)
            reached = header_integer(response.header("upload-offset"), "Upload-Offset")
            if reached != end:
                raise RetryableError(TransferInterruptedError(
                    f"the server has {reached} bytes, not {end}"))
            digest.confirm()
            offset = end
            if offset >= total:
                return

    async def _chunks(self, fd: int, start: int, end: int, digest: UploadDigest,
                      meter: Meter) -> AsyncIterator[bytes]:
        at = start
        while at < end:
            data = await pread_exact(fd, min(DISK_BYTES, end - at), at)
            digest.feed(data)
            at += len(data)
            yield data
            await meter.update(at)

    async def _state(self, location: str, total: int) -> tuple[int, bool]:
        """How much of the upload the server has, and whether it is complete.

        The upload's JSON (``GET /v1/uploads/{id}``) rather than tus HEAD: once
        an image is whole its size is the cleaned copy's, which HEAD's
        Upload-Offset cannot tell from a partial upload.
        """
        doc = await self._document("GET", location)
        received = doc.get("received")
        if doc.get("complete") is True:
            return total, True
        if type(received) is not int or not 0 <= received <= total:
            raise FileTransferError(f"the server sent no valid upload state: {received!r:.40}")
        return received, False

    # --- downloads --------------------------------------------------------------------------

    async def download(self, file: str | FileInfo, path: str | os.PathLike[str], *,
                       progress: Progress | None = None) -> Path:
        """Download a file to `path` (or into `path`, a directory or a name ending
        with "/", under the file's name made safe).

        A `FileInfo` from a message also pins the content: its `sha256` (and
        `size`) must be the server's.  A ``<path>.part`` left by an interrupted
        call is resumed when the content is pinned, else started again.

        Raises:
            FileAccessDeniedError, NoSuchFileError: not readable by this user.
            FileCorruptError: not the bytes expected (nothing is kept).
            TransferInterruptedError: `attempts` failures in a row (``<path>.part`` stays).
            OSError: `path` cannot be written.
        """
        file_id = file.id if isinstance(file, FileInfo) else file
        if not is_file_id(file_id):
            raise NoSuchFileError(f"not a file id: {file_id[:40]!r}")
        pinned = file if isinstance(file, FileInfo) and file.sha256 else None
        target = Path(path)
        if os.fspath(path).endswith(("/", os.sep)):  # "downloads/": a directory, made if need be
            await asyncio.to_thread(target.mkdir, 0o700, True, True)
        if await asyncio.to_thread(target.is_dir):
            name = pinned.name if pinned is not None else (await self.info(file_id)).name
            target = target / local_name(name)
        part = target.with_name(target.name + ".part")
        fd = await asyncio.to_thread(
            os.open, part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            sink = PartFile(fd, f'"{pinned.sha256}"' if pinned is not None else None)
            if pinned is None:
                await asyncio.to_thread(os.ftruncate, fd, 0)
            else:
                await sink.adopt()
            meter = Meter(progress, pinned.size if pinned is not None else 0)
            await self._retrying(lambda: self._receive(file_id, sink, meter),
                                 lambda: sink.size)
            if sink.size != sink.total or (pinned is not None and sink.size != pinned.size):
                raise FileCorruptError(f"got {sink.size} bytes of a {sink.total}-byte file"
                                       + (f" ({pinned.size} said)" if pinned else ""))
            got = sink.hash.hexdigest()
            if f'"{got}"' != sink.etag or (pinned is not None and got != pinned.sha256):
                raise FileCorruptError(f"downloaded bytes have SHA-256 {got}, expected"
                                       f" {sink.etag}")
            await asyncio.to_thread(os.fsync, fd)
        except FileCorruptError:
            os.close(fd)
            fd = -1
            await asyncio.to_thread(part.unlink, True)
            raise
        finally:
            if fd >= 0:
                os.close(fd)
        await asyncio.to_thread(publish, part, target)
        await meter.update(sink.size, final=True)
        return target

    async def _receive(self, file_id: str, sink: PartFile, meter: Meter) -> None:
        headers = []
        if sink.size and sink.etag is not None:
            headers = [(b"range", f"bytes={sink.size}-".encode()),
                       (b"if-range", sink.etag.encode())]
        response, conn = await self._exchange("GET", f"/v1/files/{file_id}", headers)
        if response.status == 416 and sink.size:
            await conn.discard()
            await sink.reset()  # the part is longer than the file: not its bytes
            raise RetryableError(TransferInterruptedError("the partial download does not fit"),
                                 0.0)
        if response.status not in (200, 206):
            await self._finish(conn, response, 200)
        etag = response.header("etag")
        if etag is None or (sink.etag is not None and etag != sink.etag):
            conn.close()
            raise FileCorruptError(f"the server's file is {etag}, not {sink.etag}")
        sink.etag = etag
        if response.status == 200:
            await sink.reset()
            total = header_integer(response.header("content-length"), "Content-Length")
        else:
            start, total = content_range(response.header("content-range"))
            if start != sink.size:
                conn.close()
                raise RetryableError(TransferInterruptedError(
                    f"asked from {sink.size}, got {start}"))
        sink.total = meter.total = total
        try:
            async for chunk in conn.body():
                await sink.write(chunk)
                if sink.size > total:
                    raise FileTransferError("the server sent more than the file's length")
                await meter.update(sink.size)
        finally:
            await sink.flush()
        self._keep(conn)

    # --- metadata and links ---------------------------------------------------------------

    async def info(self, file_id: str) -> FileInfo:
        """The server's `FileInfo` of a file this user may read."""
        if not is_file_id(file_id):
            raise NoSuchFileError(f"not a file id: {file_id[:40]!r}")
        doc = await self._retrying(lambda: self._document("GET", f"/v1/files/{file_id}/meta"))
        info = FileInfo.from_json(doc)
        if info is None or info.id != file_id:
            raise FileTransferError("the server sent no valid file document")
        return info

    async def link(self, file_id: str, ttl_s: int | None = None) -> str:
        """An absolute signed URL that reads the file without a token until it expires."""
        if not is_file_id(file_id):
            raise NoSuchFileError(f"not a file id: {file_id[:40]!r}")
        body = b"" if ttl_s is None else json.dumps({"ttl_s": ttl_s}).encode()
        doc = await self._retrying(lambda: self._document(
            "POST", f"/v1/files/{file_id}/links", body, expect=201))
        url = doc.get("url")
        if not isinstance(url, str) or not url.startswith(f"/v1/files/{file_id}?"):
            raise FileTransferError("the server sent no valid link")
        return self.endpoint.origin + url

    async def _document(self, method: str, target: str, body: bytes = b"",
                        expect: int = 200) -> dict[str, Any]:
        headers = [(b"content-type", b"application/json")] if body else []
        response, conn = await self._exchange(method, target, headers, body=body)
        if response.status != expect:
            await self._finish(conn, response, expect)
        try:
            doc = json.loads(await conn.document())
        except ValueError:
            doc = None
        self._keep(conn)
        if not isinstance(doc, dict):
            raise FileTransferError(f"{method} {target}: the answer is not a JSON object")
        return doc

    # --- requests, errors and retries -----------------------------------------------------

    async def _exchange(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                        **kwargs: Any) -> tuple[Response, HttpConnection]:
        conn, self._idle = self._idle, None
        if conn is not None and conn.reusable:
            if "chunks" in kwargs:  # a stream cannot be sent twice: the caller retries
                return await conn.request(method, target, headers, **kwargs), conn
            try:
                return await conn.request(method, target, headers, **kwargs), conn
            except TransferInterruptedError:
                pass  # the server closed the idle connection: once more on a new one
        if conn is not None:
            conn.close()
        conn = await HttpConnection.open(self.endpoint)
        return await conn.request(method, target, headers, **kwargs), conn

    def _keep(self, conn: HttpConnection) -> None:
        if conn.reusable and self._idle is None:
            self._idle = conn
        elif conn is not self._idle:
            conn.close()

    async def _finish(self, conn: HttpConnection, response: Response, expect: int) -> None:
        """Read the answer's body: done for `expect`, else raise its typed error."""
        text = await conn.document(MAX_DOCUMENT_BYTES)
        self._keep(conn)
        if response.status == expect:
            return
        error = http_error(response, text)
        if response.status in RETRIED_STATUSES:
            raise RetryableError(error, retry_after(response))
        raise error

    async def _retrying(self, attempt: Callable[[], Awaitable[Any]],
                        progress: Callable[[], int] | None = None) -> Any:
        """Run `attempt` until it succeeds, or fails `attempts` times in a row without
        `progress` (bytes the server confirmed, or received) moving."""
        failures, seen = 0, progress() if progress is not None else 0
        while True:
            try:
                return await attempt()
            except (RetryableError, TransferInterruptedError) as exc:
                error = exc.error if isinstance(exc, RetryableError) else exc
                wait = exc.wait_s if isinstance(exc, RetryableError) else None
                now = progress() if progress is not None else 0
                failures = 1 if now != seen else failures + 1
                seen = now
                if failures >= self.attempts:
                    if isinstance(error, TransferInterruptedError):
                        raise error from None
                    raise TransferInterruptedError(
                        f"gave up after {failures} attempts: {error}",
                        http_status=error.http_status, title=error.title,
                        detail=error.detail) from None
                self.close()
                await asyncio.sleep(wait if wait is not None else
                                    self.backoff.delay(failures - 1))


