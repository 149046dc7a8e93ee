"""HTTP/2 on the shared port (h2): prior knowledge in clear, ALPN ``h2`` over TLS.

Serves the same REST API as HTTP/1.1.  Bounds (RFC 9113 §10.5, and the 2023
"rapid reset" and 2024 "CONTINUATION flood" attacks):

* at most `MAX_STREAMS` concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS;
  more are refused with REFUSED_STREAM);
* header lists of at most 16 KiB (SETTINGS_MAX_HEADER_LIST_SIZE), and h2's own
  cap of 64 CONTINUATION frames per header block;
* bodies of at most 1 MiB per request;
* more than `MAX_RESETS` streams reset by the client within `RESET_WINDOW_S`
  ends the connection with GOAWAY ENHANCE_YOUR_CALM: a reset stream costs the
  server work the client never waits for.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import TYPE_CHECKING

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error, ProtocolError, StreamClosedError
from h2.settings import SettingCodes

from appliance.api.http import PROBLEM_JSON, ApiRequest, ApiResponse, parse_query, problem
from appliance.ratelimit import RATE_PER_S, TokenBucket
from appliance.transport.http1 import MAX_BODY_BYTES, MAX_HEADER_BYTES, SERVER_HEADER
from appliance.transport.tasks import spawn

if TYPE_CHECKING:
    from appliance.transport.server import Server

log = logging.getLogger(__name__)

MAX_STREAMS = 100
MAX_RESETS = 200
RESET_WINDOW_S = 10.0
_GRACE_S = 2.0


class _Stream:
    __slots__ = ("body", "headers", "task")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.body = bytearray()
        self.task: asyncio.Task[None] | None = None


class Http2Protocol(asyncio.Protocol):
    """One HTTP/2 connection."""

    authenticated = False  # for the server's timeout scan
    hello_seen = False

    def __init__(self, server: Server) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        # Outbound headers are ours (lower-case names, no connection headers):
        # h2's checks of them cost ~10 % of a request.  What clients send is
        # still validated in full.
        self._h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None,
                                                validate_outbound_headers=False,
                                                normalize_outbound_headers=False))
        self._flush_queued = False
        self._streams: dict[int, _Stream] = {}
        self._resets: collections.deque[float] = collections.deque()
        self._pending: dict[int, bytes] = {}  # response bodies waiting for flow control
        self._closing = False
        self._bucket = TokenBucket(server.clock.monotonic())
        self.opened_at = self.last_seen = server.clock.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server.connections.add(self)
        self._h2.local_settings.update({SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                                        SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_BYTES})
        self._h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # after GOAWAY: drained and dropped
        now = self._server.clock.monotonic()
        self.last_seen = now
        try:
            events = self._h2.receive_data(data)
        except ProtocolError as exc:
            # Malformed frames, oversized header lists, CONTINUATION floods...
            log.info("HTTP/2 protocol error, closing: %s", exc)
            self._goaway(ErrorCodes.PROTOCOL_ERROR)
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self._on_headers(event.stream_id, event.headers)
            elif isinstance(event, DataReceived):
                self._on_data(event)
            elif isinstance(event, StreamEnded):
                self._on_end(event.stream_id)
            elif isinstance(event, StreamReset):
                if self._on_reset(event.stream_id, now):
                    return
            elif isinstance(event, WindowUpdated):
                self._send_pending()
            elif isinstance(event, ConnectionTerminated):
                self._flush()
                self.close(0, "")
                return
        # The scan's request timeout: a connection with a request in progress is busy.
        self.opened_at = now
        self._flush()

    def _on_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        if len(self._streams) >= MAX_STREAMS:
            self._h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        if not self._bucket.take(self._server.clock.monotonic()):
            self._respond(stream_id, problem(
                429, "too many requests", f"at most {RATE_PER_S:.0f} requests/s per"
                " connection"))
            return
        self._streams[stream_id] = _Stream(headers)

    def _on_data(self, event: DataReceived) -> None:
        self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        stream = self._streams.get(event.stream_id)
        if stream is None or event.data is None:
            return
        stream.body += event.data
        if len(stream.body) > MAX_BODY_BYTES:
            del self._streams[event.stream_id]
            self._respond(event.stream_id, problem(
                413, "content too large", f"bodies are limited to {MAX_BODY_BYTES} bytes"))

    def _on_end(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.task is None:
            stream.task = spawn(self._serve(stream_id, stream), name="h2-request")

    def _on_reset(self, stream_id: int, now: float) -> bool:
        stream = self._streams.pop(stream_id, None)
        if stream is not None and stream.task is not None:
            stream.task.cancel()
        self._pending.pop(stream_id, None)
        resets = self._resets
        resets.append(now)
        while resets and now - resets[0] > RESET_WINDOW_S:
            resets.popleft()
        if len(resets) > MAX_RESETS:
            log.warning("HTTP/2 client reset %d streams in %.0f s: closing",
                        len(resets), RESET_WINDOW_S)
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM)
            return True
        return False

    async def _serve(self, stream_id: int, stream: _Stream) -> None:
        headers = {k: v for k, v in stream.headers if k.startswith(b":")}
        target = headers.get(b":path", b"/").decode("latin-1")
        path, _, query = target.partition("?")
        request = ApiRequest(headers.get(b":method", b"GET").decode("latin-1"), path,
                             parse_query(query),
                             {k.lower(): v for k, v in stream.headers if not k.startswith(b":")},
                             bytes(stream.body), self._transport)
        api = self._server.api
        response = (await api.handle(request) if api is not None
                    else ApiResponse(503, b'{"title": "no API"}', PROBLEM_JSON))
        if self._streams.pop(stream_id, None) is not None:
            self._respond(stream_id, response, head=request.method == "HEAD")
            self._flush_soon()

    def _respond(self, stream_id: int, response: ApiResponse, *, head: bool = False) -> None:
        body = b"" if head or response.status == 204 else response.body
        headers = [(b":status", str(response.status).encode()),
                   (b"server", SERVER_HEADER), *response.headers]
        if response.status != 204:
            headers += [(b"content-type", response.content_type),
                        (b"content-length", str(len(response.body)).encode())]
        try:
            self._h2.send_headers(stream_id, headers, end_stream=not body)
        except (StreamClosedError, ProtocolError):
            return  # the client gave up on this stream
        if body:
            self._pending[stream_id] = body
            self._send_pending()

    def _send_pending(self) -> None:
        h2 = self._h2
        for stream_id in list(self._pending):
            body = self._pending[stream_id]
            try:
                while body:
                    window = min(h2.local_flow_control_window(stream_id),
                                 h2.max_outbound_frame_size)
                    if window <= 0:
                        break
                    chunk, body = body[:window], body[window:]
                    h2.send_data(stream_id, chunk, end_stream=not body)
            except H2Error:
                body = b""
            if body:
                self._pending[stream_id] = body
            else:
                del self._pending[stream_id]
        self._flush_soon()

    def _flush_soon(self) -> None:
        """Write once the loop turn's other responses are in (one syscall for all)."""
        if not self._flush_queued:
            self._flush_queued = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _goaway(self, code: ErrorCodes) -> None:
        """Send GOAWAY, then close gently enough for the client to read it.

        Closing at once while the client is still sending makes the kernel
        answer with a TCP reset, which can destroy the GOAWAY in flight: so
        half-close, discard what still arrives, and abort after a grace period.
        """
        with contextlib.suppress(H2Error):  # already closing: the GOAWAY is out
            self._h2.close_connection(error_code=code)
        self._flush()
        transport = self._transport
        self._closing = True
        if transport is None:
            return
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(_GRACE_S, transport.abort)
        else:
            self.close(0, "")

    def _flush(self) -> None:
        self._flush_queued = False
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._server.connections.discard(self)
        for stream in self._streams.values():
            if stream.task is not None:
                stream.task.cancel()
        self._streams.clear()

    def close(self, code: int, reason: str) -> None:
        """Close the connection (the native `code` and `reason` are unused)."""
        transport, self._transport = self._transport, None
        if transport is not None:
            if reason:  # the timeout scan: say goodbye properly
                self._transport = transport
                self._goaway(ErrorCodes.NO_ERROR)
                return
            transport.close()

