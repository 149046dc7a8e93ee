"""Files (SPEC M9, issue 15): uploads in, downloads out, access checked on each.

`FileService` is what the REST routes call.  An upload (one-shot or tus) is
created with its declared length, checked against ``media.max_file_bytes``
and the app's ``media.max_app_bytes`` before a byte is stored, then receives
its body as it arrives, straight to a part file on disk.  When it is whole:

* content that *is* an image (by its bytes, never its name or declared type)
  goes through Pillow in a worker (`images.ImagePool.sanitize`): orientation
  applied, every metadata field (GPS included) dropped; only that clean copy
  is stored and served.  A damaged image or a decompression bomb is refused
  and nothing of it is kept;
* anything else is stored as it came.

Content is stored by its SHA-256 (`blobs`): the same bytes uploaded twice
take the disk once.  Who may read a file: its uploader, the users and group
members it was sent to (`FileStore.grant_file`, from the FILE flag of a
message), and whoever holds an unexpired signed link (`signing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from appliance.errors import (
    ApplianceError,
    BlobError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    QuotaError,
    TooManyRequestsError,
    UsageError,
)
from appliance.media import signing
from appliance.media.blob_writer import MAX_CHUNK
from appliance.media.blobs import BlobStore, BlobWriter
from appliance.media.config import MAX_LINK_TTL_S, MediaConfig
from appliance.media.content import (
    OCTET_STREAM,
    ChunkSource,
    WallClock,
    clean_name,
    clean_type,
    head_of,
    looks_like_image,
    read_range,
)
from appliance.media.derived import DerivedImages
from appliance.media.ids import is_file_id, new_file_id
from appliance.media.images.pool import ImagePool
from appliance.media.ranges import ByteRange
from appliance.ratelimit import UserRates
from appliance.storage.interface import Storage
from appliance.storage.models import FileRecord, FileVariant, Principal

log = logging.getLogger(__name__)

#: Users whose upload rate is tracked at once.
MAX_RATE_USERS = 10_000
#: How long a tus request waits for an earlier one on the same upload to settle.
SETTLE_WAIT_S = 10.0
class FileService:
    """Uploads, downloads, thumbnails and signed links for the REST routes."""

    def __init__(self, store: Storage, blobs: BlobStore, images: ImagePool | None,
                 config: MediaConfig, clock: WallClock) -> None:
        self.store = store
        self.blobs = blobs
        self.images = images
        self.config = config
        self.clock = clock
        self._key: bytes | None = None
        #: Uploads receiving a body in this process now (one writer each), and
        #: the event set when that request has recorded its progress.
        self._receiving: dict[str, asyncio.Event] = {}
        #: Upload starts per user (`media.uploads_per_minute`), bounded like the engine's.
        self._starts = UserRates(config.uploads_per_minute / 60, config.uploads_per_minute,
                                 MAX_RATE_USERS)
        self.derived = DerivedImages(store, blobs, images, config, clock)

    # --- uploads ------------------------------------------------------------------------

    async def create(self, user: Principal, length: int, content_type: str,
                     name: str) -> FileRecord:
        """A new upload of `length` bytes, counted against the app's storage now.

        Raises:
            QuotaError: past ``media.max_file_bytes`` or ``media.max_app_bytes``.
        """
        self._count_start(user.user_id)
        self._check_size(length)
        now = self.clock.wall_ms()
        record = FileRecord(
            file_id=new_file_id(), app_id=user.app_id, owner_id=user.user_id, size=length,
            received=0, sha256=None, content_type=clean_type(content_type),
            name=clean_name(name), width=0, height=0, created_ms=now,
            expires_ms=now + self.config.upload_expiry_s * 1000)
        await self.store.create_file(record, self.config.max_app_bytes)
        return record

    def _check_size(self, size: int) -> None:
        """Raises QuotaError past ``media.max_file_bytes``."""
        limit = self.config.max_file_bytes
        if size > limit:
            raise QuotaError(f"files are limited to {limit} bytes", limit="media.max_file_bytes",
                             allowed=limit)

    def _count_start(self, user_id: int) -> None:
        """Refuse a user past ``media.uploads_per_minute``.

        Raises:
            TooManyRequestsError: with the wait before the next start.
        """
        per_minute = self.config.uploads_per_minute
        if not self._starts.take(user_id, self.clock.wall_ms() / 1000):
            raise TooManyRequestsError(f"at most {per_minute} uploads per minute",
                                       retry_after_s=60 / per_minute)

    async def owned_upload(self, user: Principal, file_id: str) -> FileRecord:
        """An upload of `user`'s (tus HEAD, PATCH, DELETE): 404 for anyone else's.

        A request still appending to it (its client went away a moment ago and
        asks again at once) is waited for, up to `SETTLE_WAIT_S`: HEAD then
        reports every byte that arrived, not a stale offset.
        """
        record = await self._record(file_id)
        # Ownership first: anyone else's request must neither wait on the upload
        # (up to SETTLE_WAIT_S each) nor learn by the delay that it is receiving.
        if record.app_id != user.app_id or record.owner_id != user.user_id:
            raise NotFoundError(f"no upload {file_id}")
        appending = self._receiving.get(file_id)
        if appending is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(appending.wait(), SETTLE_WAIT_S)
            record = await self._record(file_id)
        return record

    async def receive(self, record: FileRecord, body: ChunkSource, offset: int) -> FileRecord:
        """Append `body` at `offset`; the upload completes when its length is reached.

        What arrives before the client goes away is kept: a tus client resumes
        from the offset HEAD reports.

        Raises:
            ConflictError: `offset` is not what was received (tus 409), the upload
                is complete already, or another request is appending to it.
            UsageError: the body is longer than the upload's declared length.
            ImageRefusedError: an image that cannot be made clean.  This and any other
                failure to store the whole upload (busy image workers: ImageBusyError;
                a cleaned image past max_file_bytes: QuotaError; the disk) delete it.
            BodyAbortedError: the client went away (the received part is kept).
        """
        if record.file_id in self._receiving:
            raise ConflictError("another request is appending to this upload")
        settled = self._receiving[record.file_id] = asyncio.Event()
        try:
            # Read again now that no other request of this process can append: the
            # caller's copy may predate one that completed the upload meanwhile (its
            # progress is committed before it lets go), and bytes written on such a
            # stale copy would become a blob that no row refers to.
            record = await self._record(record.file_id)
            if record.complete:
                raise ConflictError("the upload is complete")
            if offset != record.received:
                raise ConflictError(f"Upload-Offset is {record.received}, not {offset}")
            await self._trim_part(record.file_id, offset)
            writer = await self.blobs.resume(record.file_id, offset)  # offset 0: a new part
            received = offset
            try:
                while chunk := await body.read():
                    if received + len(chunk) > record.size:
                        raise UsageError(f"the body is longer than the upload's {record.size}"
                                         " bytes")
                    for start in range(0, len(chunk), MAX_CHUNK):  # the writer's bound
                        await writer.write(chunk[start:start + MAX_CHUNK])
                    received += len(chunk)
            except BaseException:
                # Every chunk before the failure is in the part (the one past the
                # declared length was not written): the offset recorded must be the
                # part's size, or every later PATCH is a 409.
                await self._suspend(record, writer, received)
                raise
            if received < record.size:
                return await self._suspend(record, writer, received)
            return await self._finish(record, writer)
        finally:
            del self._receiving[record.file_id]
            settled.set()

    async def _trim_part(self, upload_id: str, offset: int) -> None:
        """Cut what a part holds past the recorded `offset`: a PATCH cut by a crash (or
        whose progress could not be recorded) wrote bytes that the client, told the
        recorded offset by HEAD, sends again.  Kept, every PATCH would be a 409."""
        on_disk = await self.blobs.upload_offset(upload_id)
        if on_disk is not None and on_disk > offset:
            log.info("upload %s: %d bytes past the recorded offset dropped", upload_id,
                     on_disk - offset)
            try:
                await asyncio.to_thread(os.truncate, self.blobs.part_path(upload_id), offset)
            except OSError as exc:
                raise BlobError(f"upload {upload_id} cannot be trimmed: {exc.strerror}"
                                ) from None

    async def _suspend(self, record: FileRecord, writer: BlobWriter, received: int) -> FileRecord:
        try:
            await writer.pause()
        except ApplianceError:
            # A write that failed or was cancelled half-way: what the part holds is
            # unknown, so it goes and the upload starts again at 0.
            await writer.abort()
            received = 0
        try:
            await self.store.set_received(record.file_id, received)
        except ApplianceError as exc:  # the part keeps the bytes; HEAD would say less
            log.warning("upload %s: progress not recorded: %s", record.file_id, exc)
        return _replace(record, received=received)

    async def _finish(self, record: FileRecord, writer: BlobWriter) -> FileRecord:
        await writer.pause()  # flushed: its first bytes (and an image worker) read the file
        current = await self.store.file(record.file_id)
        if current is not None and current.complete:  # by another process: not ours to drop
            raise ConflictError("the upload is complete")
        try:
            if current is None:
                # Swept (expired) while receiving: its bytes must not become a blob
                # that no row refers to (the sweep would never find it).
                raise NotFoundError(f"upload {record.file_id} was removed while receiving")
            sha256, size, content_type, width, height = await self._content(record)
        except Exception:
            # Whatever failed (a refused image, busy or stopped image workers, the disk),
            # the upload goes whole and the client starts again (tus: HEAD is a 404).
            # Kept, it would stay with its part whole and its offset behind: every PATCH
            # a 409, its size held against the app's quota for upload_expiry_s.
            await self._drop(record.file_id)
            raise
        return await self.store.complete_file(record.file_id, sha256, size, content_type,
                                              width, height)

    async def _content(self, record: FileRecord) -> tuple[bytes, int, str, int, int]:
        """The whole part stored as a blob: (sha256, size, type, width, height)."""
        content_type, width, height = record.content_type, 0, 0
        part = self.blobs.part_path(record.file_id)
        try:
            head = await asyncio.to_thread(head_of, part)
        except OSError as exc:
            raise BlobError(f"upload {record.file_id} cannot be read: {exc.strerror}"
                            ) from None
        if looks_like_image(head) and self.images is not None:
            clean = part.with_name(part.name + ".clean")
            try:
                info = await self.images.sanitize(part, clean, owner=record.app_id)
                # Re-encoded, it may be larger than what was declared and counted (a
                # palette PNG of noise grows 2.5 times as RGB): it must fit a file too.
                self._check_size((await asyncio.to_thread(clean.stat)).st_size)
            except BaseException:
                with contextlib.suppress(OSError):
                    clean.unlink()
                raise
            await self.blobs.discard(record.file_id)
            sha256, size = await self.blobs.adopt(clean)
            content_type, width, height = info.mime, info.width, info.height
        else:
            # The hash state was kept by the pause: resuming costs no re-read.
            writer = await self.blobs.resume(record.file_id, record.size)
            sha256, size = await writer.commit()
            if content_type.startswith("image/"):
                content_type = OCTET_STREAM  # says image, is not one we know: never inline
        return sha256, size, content_type, width, height

    async def _drop(self, file_id: str) -> None:
        """An upload that cannot go on: its part and its row (and what it held of the quota)."""
        try:
            await self.blobs.discard(file_id)
            await self.store.delete_file(file_id)
        except ApplianceError as exc:  # it expires; the sweep removes it then
            log.warning("upload %s could not be removed: %s", file_id, exc)

    async def receive_whole(self, record: FileRecord, body: ChunkSource) -> FileRecord:
        """A one-shot upload (``POST /v1/files``, a picture): all of `body`, or nothing.

        It cannot be resumed, so when its client goes away what arrived goes at
        once, with the declared size it held against the app's quota: kept for
        ``upload_expiry_s``, a few aborted large POSTs would block the app's uploads.

        Raises:
            UsageError: the body ended before the declared length.
            (and what `receive` raises)
        """
        try:
            done = await self.receive(record, body, 0)
        except BaseException:
            await self._drop(record.file_id)
            raise
        if not done.complete:
            await self._drop(record.file_id)
            raise UsageError("the body ended before Content-Length")
        return done

    async def discard(self, record: FileRecord) -> None:
        """tus termination: the upload and what it received go.

        Raises:
            ConflictError: a request is still appending to it (past the settle wait):
                removing it now would free its quota while the bytes keep coming.
        """
        if record.file_id in self._receiving:
            raise ConflictError("a request is appending to this upload; retry when it ends")
        if self.derived.making(record.file_id):
            # Its variant would be stored after the file went: a blob no row refers to.
            raise ConflictError("a thumbnail of this file is being made; retry when it ends")
        await self.blobs.discard(record.file_id)
        await self.store.delete_file(record.file_id)

    # --- reading ------------------------------------------------------------------------

    async def _record(self, file_id: str) -> FileRecord:
        record = await self.store.file(file_id) if is_file_id(file_id) else None
        if record is None:
            raise NotFoundError(f"no file {file_id[:40]}")
        return record

    async def readable(self, file_id: str, *, user: Principal | None = None,
                       link: tuple[str, str] | None = None) -> FileRecord:
        """A complete file `user` (or the holder of `link`: exp, sig) may read.

        Raises:
            NotFoundError: no such complete file (or another app's: never "forbidden",
                which would confirm it exists).
            ForbiddenError: the file was not shared with the user; the link is bad.
        """
        record = await self._record(file_id)
        if not record.complete:
            raise NotFoundError(f"file {file_id} is still being uploaded")
        if record.expires_ms is not None and record.expires_ms <= self.clock.wall_ms():
            # Expired, not swept yet (the sweep runs every few minutes, a bounded number
            # per pass): gone for every reader, a signed link's holder included.
            raise NotFoundError(f"no file {file_id}")
        if link is not None:
            signing.verify(await self.signing_key(), file_id, link[0], link[1],
                           self.clock.wall_ms() // 1000)
            return record
        if user is None or user.app_id != record.app_id:
            raise NotFoundError(f"no file {file_id}")
        if not await self.store.may_read(file_id, user.user_id, self.clock.wall_ms()):
            raise ForbiddenError("this file was not sent to you")
        return record

    def read(self, sha256: bytes, byte_range: ByteRange | None, size: int
             ) -> AsyncIterator[bytes]:
        """The bytes of a stored blob (or a range of them), read in a thread."""
        path = self.blobs.local_path(sha256)
        start, length = (byte_range.start, byte_range.length) if byte_range else (0, size)
        return read_range(path, start, length)

    async def signing_key(self) -> bytes:
        if self._key is None:
            self._key = await self.store.media_signing_key()
        return self._key

    async def link(self, record: FileRecord, ttl_s: int | None) -> tuple[str, int]:
        """A signed link's query string and expiry (Unix seconds)."""
        return await self.link_to(record.file_id, ttl_s)

    async def link_to(self, file_id: str, ttl_s: int | None = None) -> tuple[str, int]:
        """A signed link's query string and expiry for a file id (see `link`)."""
        ttl = self.config.link_ttl_s if ttl_s is None else ttl_s
        if not 1 <= ttl <= MAX_LINK_TTL_S:
            raise UsageError(f"ttl_s must be 1 to {MAX_LINK_TTL_S}")
        expires = self.clock.wall_ms() // 1000 + ttl
        return signing.link_query(await self.signing_key(), file_id, expires), expires

    # --- images (`derived`) ---------------------------------------------------------------

    async def variant(self, record: FileRecord, size: int, fmt: str, *,
                      square: bool) -> FileVariant:
        """See `DerivedImages.variant`."""
        return await self.derived.variant(record, size, fmt, square=square)

    async def store_preview_image(self, app_id: int, source: Path, size: int,
                                  lifetime_s: float) -> str | None:
        """See `DerivedImages.store_preview_image`."""
        return await self.derived.store_preview_image(app_id, source, size, lifetime_s)


def _replace(record: FileRecord, *, received: int) -> FileRecord:
    return dataclasses.replace(record, received=received)
