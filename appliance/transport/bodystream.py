"""A request body handed to its handler as it arrives (uploads, issue 15).

The HTTP/1.1 and HTTP/2 protocols feed it; the handler reads it
(`appliance.api.http.BodyStream`).  It holds at most what the protocol lets
in: HTTP/1.1 stops reading the socket once `STREAM_BUFFER_BYTES` wait here,
HTTP/2 grants flow-control credit only for what the handler has read.  So a
2 GiB upload costs the server this buffer, not 2 GiB, and a client that
sends faster than the disk writes waits in its own kernel.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from appliance.errors import BodyAbortedError

#: Bytes of one body that may wait for its handler; HTTP/1.1 stops reading
#: past it.  Also the most one `read` returns at once (one disk write).
STREAM_BUFFER_BYTES = 512 * 1024


class StreamedBody:
    """The transport's side (`feed`, `finish`, `fail`) and the handler's (`read`)."""

    __slots__ = ("_chunks", "_consumed", "_done", "_error", "_started", "_waiter", "buffered",
                 "length", "started", "total")

    def __init__(self, length: int | None, *, consumed: Callable[[int], None],
                 started: Callable[[], None]) -> None:
        self.length = length
        self._chunks: deque[bytes] = deque()
        #: Bytes waiting for the handler; bytes received in all.
        self.buffered = 0
        self.total = 0
        self._done = False
        self._error: str | None = None
        self._waiter: asyncio.Future[None] | None = None
        #: Called with the size of what the handler took (HTTP/2 credits it,
        #: HTTP/1.1 reads again below the buffer bound).
        self._consumed = consumed
        #: Called at the handler's first read: the caller is authenticated by
        #: then, so the client may send (100-continue, HTTP/2's wider window).
        self._started = started
        self.started = False

    # --- the transport's side ---------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._done or self._error is not None or not data:
            return
        self._chunks.append(data)
        self.buffered += len(data)
        self.total += len(data)
        self._wake()

    def finish(self) -> None:
        """The body is complete."""
        self._done = True
        self._wake()

    def fail(self, reason: str) -> None:
        """The body will not complete (the connection or the stream is gone)."""
        if not self._done and self._error is None:
            self._error = reason
            self._wake()

    @property
    def complete(self) -> bool:
        return self._done

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the handler's side -------------------------------------------------------------

    async def read(self) -> bytes:
        if not self.started:
            self.started = True
            self._started()
        while not self._chunks:
            if self._error is not None:
                raise BodyAbortedError(self._error)
            if self._done:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        chunks = self._chunks
        # One join per read, not per frame: the handler's disk write costs a
        # thread hop, so it gets everything buffered (at most the bound).
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        self._consumed(len(data))
        return data
