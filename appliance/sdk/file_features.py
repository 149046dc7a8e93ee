"""Files for the SDK's `Client` (issue 15): HTTP on the same port, files.py does the work.

    info = await client.upload_file("photo.jpg")
    message = await client.send_file("bob", "photo.jpg", caption="the view")
    path = await client.download_file(incoming.files[0], "downloads/")
    url = await client.file_link(info.id, ttl_s=3600)

The `FileTransfer` is made on first use: files need h11 (a dependency of the
wheel), messaging nothing, so this module imports files.py only then.
"""

from __future__ import annotations

import ssl as ssl_module
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.protocol.wire import MAX_ADDRESS_BYTES, Flag, Status
from appliance.sdk.errors import ClientClosedError, ClientError, TooLargeError
from appliance.sdk.events import Backoff
from appliance.sdk.models import (
    MESSAGE_OVERHEAD,
    FileInfo,
    Group,
    OutgoingMessage,
    file_payload,
)

if TYPE_CHECKING:
    from appliance.sdk.files import FileTransfer, Progress
    from appliance.sdk.store import LocalStore


class FileFeatures:
    """The files half of `Client` (a mixin: the client holds the server and the messages)."""

    host: str
    port: int
    ssl: ssl_module.SSLContext | None
    connect_timeout_s: float
    backoff: Backoff
    max_frame_bytes: int
    _token: bytes
    _closing: bool
    _files: FileTransfer | None
    _store_or_raise: Callable[[], LocalStore]
    send: Callable[..., OutgoingMessage]

    def _file_transfer(self) -> FileTransfer:
        if self._closing:
            raise ClientClosedError("this client was closed")
        if self._files is None:
            # Imported here: files need h11 (a dependency of the wheel), messaging nothing.
            try:
                from appliance.sdk.files import FileTransfer
                from appliance.sdk.http import Endpoint
            except ImportError:
                raise ClientError("files need h11: pip install h11") from None
            self._files = FileTransfer(Endpoint(self.host, self.port, self._token, self.ssl,
                                                self.connect_timeout_s), self.backoff)
        return self._files

    async def upload_file(self, path: str | PathLike[str], *, name: str | None = None,
                          content_type: str | None = None, progress: Progress | None = None
                          ) -> FileInfo:
        """Upload a file (resumable, streamed from disk); see `send_file`.

        Raises:
            FileTransferError: its subclasses say why (`QuotaExceededError`...).
        """
        return await self._file_transfer().upload(path, name=name, content_type=content_type,
                                                  progress=progress)

    async def send_file(self, to: str | Group, path: str | PathLike[str], *,
                        caption: str | None = None, content_type: str | None = None,
                        name: str | None = None, progress: Progress | None = None,
                        expiry_s: int | None = None, type: int = 0, priority: int = 0,
                        flags: int = Flag.DEFAULT, refid: int = 0) -> OutgoingMessage:
        """Upload a file, then send it: a MESSAGE with `Flag.FILE` whose payload is
        ``{"files": [...], "text": caption}`` (PROTOCOL.md §3.3.1).  The server lets
        the recipient (the user, or the group's members) download it.

        `progress(sent_bytes, total_bytes)` (a function or coroutine function) is
        called at most ten times a second, and once at the end.

        Raises:
            FileTransferError: the upload failed (see `upload_file`).
            TooLargeError: the caption cannot fit in a message (checked first).
            and what `send` raises.
        """
        self._store_or_raise()
        size = len(file_payload([FileInfo("a" * 26, name or Path(path).name, "x" * 127, 2**53,
                                          "0" * 64, 99999, 99999)], caption))
        if size + MAX_ADDRESS_BYTES + MESSAGE_OVERHEAD > self.max_frame_bytes:
            raise TooLargeError(f"a caption of {len(caption or '')} characters does not fit"
                                " in a message", status=Status.TOO_LARGE, message_id=0)
        info = await self.upload_file(path, name=name, content_type=content_type,
                                      progress=progress)
        return self.send(to, file_payload([info], caption), expiry_s=expiry_s, type=type,
                         priority=priority, flags=flags | Flag.FILE, refid=refid)

    async def download_file(self, file: str | FileInfo, path: str | PathLike[str], *,
                            progress: Progress | None = None) -> Path:
        """Download a file (an id, or a `FileInfo` of `IncomingMessage.files`) to
        `path`, or into the directory `path`; resumed after a cut, checked
        against its SHA-256, then renamed into place.  Returns the file's path."""
        return await self._file_transfer().download(file, path, progress=progress)

    async def file_link(self, file_id: str, ttl_s: int | None = None) -> str:
        """A signed URL that reads the file without a token for `ttl_s` seconds
        (the server's ``media.link_ttl_s`` by default, 7 days at most)."""
        return await self._file_transfer().link(file_id, ttl_s)
