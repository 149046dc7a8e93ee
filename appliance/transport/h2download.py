"""Streamed response bodies (downloads) on one HTTP/2 connection (issue 15).

Each download is a task writing its chunks as DATA frames within the
client's flow-control windows (RFC 9113 §6.9) and the connection's output
high-water mark; it waits for a WINDOW_UPDATE or for the client to drain
(`wake`).  A download whose source fails is reset (INTERNAL_ERROR), so the
client does not wait for ever; one the client resets is cancelled and its
source closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import H2Error

from appliance.api.http import ApiResponse
from appliance.transport.tasks import spawn

log = logging.getLogger(__name__)


class DownloadOutput(Protocol):
    """What the downloads need of their connection."""

    @property
    def writable(self) -> bool:
        """The connection is open and not going away."""
        ...

    @property
    def stalled(self) -> bool:
        """Our output is above the high-water mark (the client does not read)."""
        ...

    def flush(self) -> None:
        """Write what h2 has queued now."""
        ...

    def flush_soon(self) -> None:
        """Write what h2 has queued at the end of this loop turn."""
        ...

    def download_ended(self) -> None:
        """A download ended (the keep-alive deadline runs from now)."""
        ...


class H2Downloads:
    """The downloads in progress on one connection."""

    def __init__(self, h2: H2Connection, output: DownloadOutput) -> None:
        self._h2 = h2
        self._output = output
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._writable: asyncio.Future[None] | None = None

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def start(self, stream_id: int, response: ApiResponse) -> None:
        self._tasks[stream_id] = spawn(self._pump(stream_id, response), name="h2-download")

    def cancel(self, stream_id: int) -> None:
        task = self._tasks.pop(stream_id, None)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        self.wake()

    def wake(self) -> None:
        """A WINDOW_UPDATE came, or the client drained our output: try again."""
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _writable_again(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()
        await self._writable

    async def _pump(self, stream_id: int, response: ApiResponse) -> None:
        """Write a streamed body within the client's windows and our high-water mark."""
        h2, output = self._h2, self._output
        stream = response.stream
        assert stream is not None
        try:
            async for chunk in stream:
                view = memoryview(chunk)
                while view:
                    if not output.writable:
                        return
                    window = h2.local_flow_control_window(stream_id)
                    if output.stalled or window <= 0:
                        await self._writable_again()
                        continue
                    frame = h2.max_outbound_frame_size
                    end = min(len(view), window)
                    for start in range(0, end, frame):
                        h2.send_data(stream_id, bytes(view[start:min(start + frame, end)]))
                    view = view[end:]
                    output.flush()  # now: pause_writing must see the backlog
            h2.end_stream(stream_id)
            output.flush_soon()
        except H2Error:
            return  # the stream or the connection is gone
        except Exception:  # its source failed (a disk error): reset, the client waits no more
            log.exception("a streamed response failed")
            with contextlib.suppress(H2Error):
                h2.reset_stream(stream_id, ErrorCodes.INTERNAL_ERROR)
            output.flush_soon()
        finally:
            self._tasks.pop(stream_id, None)
            output.download_ended()
            await close_stream(response)


async def close_stream(response: ApiResponse) -> None:
    """Release a streamed body that will not be (fully) written (its open file)."""
    closer = getattr(response.stream, "aclose", None)
    if closer is not None:
        await closer()
