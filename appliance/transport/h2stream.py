"""One HTTP/2 request stream's state (`appliance.transport.http2`)."""

from __future__ import annotations

import asyncio

from appliance.transport.bodystream import StreamedBody

#: A streamed upload's window once its handler reads (after authentication),
#: and what the connection's window grows by, once, for uploads: a fast client
#: then keeps a megabyte in flight instead of 64 KiB (RFC 9113 §6.9).  The
#: server holds at most this much of one connection's uploads, since credit is
#: given back only for what the handler has taken.
UPLOAD_WINDOW = 1024 * 1024


class H2Stream:
    """One request's stream: its headers, the body held, its flow-control credit, the
    task answering it, and a streamed upload's body."""

    __slots__ = ("body", "credited", "headers", "opened_at", "owed", "task", "upload")

    def __init__(self, headers: list[tuple[bytes, bytes]], now: float) -> None:
        self.headers = headers
        self.body = bytearray()
        self.opened_at = now
        self.credited = 0  # body bytes held and already given back as flow-control credit
        self.owed = 0  # body bytes held whose credit waits for room in the budgets
        self.task: asyncio.Task[None] | None = None
        #: A streamed upload (its handler runs from the headers on); `opened_at`
        #: then moves with each DATA frame (the upload's progress deadline).
        self.upload: StreamedBody | None = None
