"""HTTP/2 on the shared port (h2): prior knowledge in clear, ALPN ``h2`` over TLS.

Serves the same REST API as HTTP/1.1.  Bounds (RFC 9113 §10.5, the 2019
flood CVEs, the 2023 "rapid reset" and 2024 "CONTINUATION flood" attacks):

* at most `MAX_STREAMS` concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS;
  more are refused with REFUSED_STREAM);
* header lists of at most 16 KiB (SETTINGS_MAX_HEADER_LIST_SIZE), and h2's own
  cap of 64 CONTINUATION frames per header block;
* bodies of at most 1 MiB per request, and flow-control credit granted only
  for body bytes the server is prepared to hold: a budget per connection and
  one for the whole server (`h2_body_bytes_*`); a client past its credit
  breaks the protocol (FLOW_CONTROL_ERROR);
* control frames (PING, SETTINGS, ...) at most `h2_control_frames_per_s`
  (burst `h2_control_frame_burst`), counted from the frame headers before h2
  parses them; more than `MAX_RESETS` streams reset by the client within
  `RESET_WINDOW_S`; more than `REFUSALS_PER_S` requests a second answered 429
  (past the request rate): each ends the connection with GOAWAY ENHANCE_YOUR_CALM;
* deadlines: a request (HEADERS to END_STREAM) within `request_timeout_s`
  (else 408 on that stream), a connection with no request in progress is
  closed after `keepalive_timeout_s` whatever PINGs it sends, none while the
  server answers;
* a client that does not read is not read from past the output high-water
  mark (and gets no more answers), and is cut after `send_timeout_s`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

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

from appliance.api.http import (
    PROBLEM_JSON,
    ApiRequest,
    ApiResponse,
    parse_query,
    problem,
    rate_limited,
)
from appliance.protocol import h2repr  # noqa: F401 - installs the cheap frame repr
from appliance.protocol.h2frames import ControlFrameCounter
from appliance.ratelimit import TokenBucket
from appliance.transport.bodystream import StreamedBody
from appliance.transport.bounds import (
    CLOSE_GRACE_S,
    H2_STREAM_WINDOW,
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_RESETS,
    MAX_STREAMS,
    REFUSAL_BURST,
    REFUSALS_PER_S,
    RESET_WINDOW_S,
    SERVER_HEADER,
    ByteBudget,
    close_within,
    cut,
    set_write_limits,
)
from appliance.transport.h2download import H2Downloads, close_stream
from appliance.transport.h2stream import UPLOAD_WINDOW, H2Stream
from appliance.transport.host import Host
from appliance.transport.tasks import spawn

log = logging.getLogger(__name__)


class Http2Protocol(asyncio.Protocol):
    """One HTTP/2 connection."""

    def __init__(self, server: Host) -> None:
        self._server = server
        self._bounds = server.bounds
        self._transport: asyncio.Transport | None = None
        # Outbound headers are ours (lower-case names, no connection headers):
        # h2's checks of them cost ~10 % of a request.  What clients send is
        # still validated in full.
        self._h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None,
                                                validate_outbound_headers=False,
                                                normalize_outbound_headers=False))
        self._flush_queued = False
        self._streams: dict[int, H2Stream] = {}
        self._resets: collections.deque[float] = collections.deque()
        self._pending: dict[int, bytes] = {}  # response bodies waiting for flow control
        #: Streamed response bodies being written, and who waits for window or drain.
        self._downloads = H2Downloads(self._h2, self)
        self._upload_window_opened = False
        self._closing = False
        #: The server stops: streams already open are answered, new ones refused.
        self._finishing = False
        now = server.clock.monotonic()
        self._bucket = TokenBucket(now)
        self._refusals = TokenBucket(now, REFUSALS_PER_S, REFUSAL_BURST)
        self._control = ControlFrameCounter()
        self._control_bucket = TokenBucket(now, self._bounds.h2_control_frames_per_s,
                                           self._bounds.h2_control_frame_burst)
        self._held = ByteBudget(self._bounds.h2_body_bytes_per_connection)
        #: No request in progress since then (keep-alive deadline); the first
        #: request must come within the request deadline.
        self._idle_since = now
        self._served = 0
        self._stalled_at = 0.0  # when the output went above the high-water mark

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        set_write_limits(transport, self._bounds.output_high_water_bytes)
        self._server.connections.add(self)
        self._h2.local_settings.update({SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                                        SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_BYTES,
                                        SettingCodes.INITIAL_WINDOW_SIZE: H2_STREAM_WINDOW})
        self._h2.initiate_connection()
        self._flush()

    # --- bytes from the client ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # after GOAWAY: drained and dropped
        now = self._server.clock.monotonic()
        controls = self._control.feed(data)
        if controls:
            take = self._control_bucket.take
            for _ in range(controls):
                if not take(now):
                    log.warning("HTTP/2 client sent control frames past %.0f/s: closing",
                                self._bounds.h2_control_frames_per_s)
                    self._server.refusals["h2_control_flood"] += 1
                    self._goaway(ErrorCodes.ENHANCE_YOUR_CALM)
                    return
        try:
            events = self._h2.receive_data(data)
        except ProtocolError as exc:
            # Malformed frames, oversized header lists, CONTINUATION floods,
            # DATA past the credit granted (FLOW_CONTROL_ERROR)...
            log.info("HTTP/2 protocol error, closing: %s", exc)
            self._goaway(ErrorCodes.PROTOCOL_ERROR)
            return
        for event in events:
            if isinstance(event, RequestReceived):
                if self._on_headers(event.stream_id, event.headers, now):
                    return
            elif isinstance(event, DataReceived):
                self._on_data(event)
            elif isinstance(event, StreamEnded):
                self._on_end(event.stream_id)
            elif isinstance(event, StreamReset):
                if self._on_reset(event.stream_id, now):
                    return
            elif isinstance(event, WindowUpdated):
                self._send_pending()
                self._downloads.wake()
            elif isinstance(event, ConnectionTerminated):
                self._flush()
                self.close(0, "")
                return
        self._flush()
        if self._server.stopping and not self._finishing:
            self.finish()  # a connection made during the shutdown's grace

    def _on_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]],
                    now: float) -> bool:
        """A request's head; whether the connection ended over it (`REFUSALS_PER_S`)."""
        if len(self._streams) >= MAX_STREAMS or self._finishing:
            # Not processed: the client may retry it elsewhere (RFC 9113 §8.7).
            self._h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return False
        if not self._bucket.take(now):
            self._server.refusals["http_rate_limited"] += 1
            if not self._refusals.take(now):
                log.warning("HTTP/2 client past %d answers 429/s: closing", REFUSALS_PER_S)
                self._server.refusals["h2_rate_ignored"] += 1
                self._goaway(ErrorCodes.ENHANCE_YOUR_CALM)
                return True
            self._respond(stream_id, rate_limited())
            return False
        stream = self._streams[stream_id] = H2Stream(headers, now)
        api = self._server.api
        pseudo = {k: v for k, v in headers if k.startswith(b":")}
        if api is not None and api.streams(
                pseudo.get(b":method", b"").decode("latin-1"),
                pseudo.get(b":path", b"/").partition(b"?")[0].decode("latin-1")):
            length = next((v for k, v in headers if k == b"content-length"), None)
            stream.upload = StreamedBody(
                int(length) if length is not None and length.isdigit() else None,
                consumed=lambda size: self._upload_consumed(stream_id, size),
                started=lambda: self._upload_started(stream_id))
            stream.task = spawn(self._serve(stream_id, stream), name="h2-upload")
        return False

    def _on_data(self, event: DataReceived) -> None:
        size = event.flow_controlled_length
        stream = self._streams.get(event.stream_id)
        if stream is not None and stream.upload is not None:
            # Credit comes back as the handler reads (`_upload_consumed`);
            # padding at once, it is never read.
            stream.upload.feed(event.data)
            stream.opened_at = self._server.clock.monotonic()
            self._credit(event.stream_id, size - len(event.data))
            return
        if stream is None or stream.task is not None:
            # Refused, answered early or reset: nothing is kept, the credit goes back.
            self._credit(event.stream_id, size)
            return
        stream.body += event.data
        if len(stream.body) > MAX_BODY_BYTES:
            self._credit(event.stream_id, size)
            self._answer_early(event.stream_id, problem(
                413, "content too large", f"bodies are limited to {MAX_BODY_BYTES} bytes"))
            return
        # Credit only for what both budgets can hold: past them the client
        # waits (its window stays shut) instead of the server's memory growing.
        if not stream.owed and self._reserve(event.stream_id, size):
            stream.credited += size
            self._credit(event.stream_id, size)
        else:
            stream.owed += size
            self._server.body_budget.wait(self._grant_owed)
            self._unblock_connection_window()

    def _unblock_connection_window(self) -> None:
        """Refuse the youngest waiting upload when held-back bytes could shut the
        connection's window.

        Bytes whose credit is held back count against the connection's window as
        well as their stream's (RFC 9113 §6.9): once they fill it, even the oldest
        stream, which may always pass the budget, cannot send, and every upload
        waits for its deadline.  REFUSED_STREAM says the request was not processed
        and may be retried (§8.7); its bytes' credit reopens the window.
        """
        owed = {sid: s.owed for sid, s in self._streams.items() if s.owed}
        if sum(owed.values()) <= H2_STREAM_WINDOW // 2:  # h2 reopens the rest by itself
            return
        youngest = max(owed)
        if not any(sid != youngest and s.task is None for sid, s in self._streams.items()):
            # Nothing else on this connection is uploading: no one is shut out,
            # so the upload waits for room in the server's budget (or its deadline).
            return
        self._server.refusals["h2_upload_refused"] += 1
        self._forget(youngest)  # credits what it held back
        with contextlib.suppress(H2Error):
            self._h2.reset_stream(youngest, ErrorCodes.REFUSED_STREAM)
        self._flush_soon()

    def _reserve(self, stream_id: int, size: int) -> bool:
        # The oldest stream still receiving may pass the connection's budget
        # (by at most one body): otherwise concurrent uploads that each got
        # part of the budget could all wait for credit until their deadline.
        held = self._held
        if not held.take(size) and not (stream_id == self._oldest_receiving()
                                        and held.take(size, force=True)):
            return False
        if not self._server.body_budget.take(size):
            self._held.release(size)
            return False
        return True

    def _oldest_receiving(self) -> int:
        return next((sid for sid, s in self._streams.items() if s.task is None), 0)

    def _credit(self, stream_id: int, size: int) -> None:
        if size:
            with contextlib.suppress(H2Error):  # the stream or the connection is gone
                self._h2.acknowledge_received_data(size, stream_id)

    def _grant_owed(self) -> None:
        """Room was freed: credit the oldest streams' held bytes first."""
        if self._transport is None:
            return
        granted = False
        for stream_id, stream in self._streams.items():
            if not stream.owed:
                continue
            if not self._reserve(stream_id, stream.owed):
                self._server.body_budget.wait(self._grant_owed)
                break
            stream.credited += stream.owed
            self._credit(stream_id, stream.owed)
            stream.owed = 0
            granted = True
        if granted:
            self._flush_soon()

    def _release(self, stream: H2Stream) -> None:
        """A stream's body is no longer held: its bytes go back to the budgets."""
        if stream.credited:
            self._held.release(stream.credited)
            self._server.body_budget.release(stream.credited)
            stream.credited = 0
        stream.body = bytearray()
        if self._held.used < self._held.limit:
            self._grant_owed()

    def _on_end(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.upload is not None:
            stream.upload.finish()
            return
        if stream is not None and stream.task is None:
            if stream.owed:  # the last bytes are in: no need to hold their credit back
                self._credit(stream_id, stream.owed)
                stream.owed = 0
            stream.task = spawn(self._serve(stream_id, stream), name="h2-request")

    def _on_reset(self, stream_id: int, now: float) -> bool:
        self._forget(stream_id)
        self._pending.pop(stream_id, None)
        self._downloads.cancel(stream_id)
        resets = self._resets
        resets.append(now)
        while resets and now - resets[0] > RESET_WINDOW_S:
            resets.popleft()
        if len(resets) > MAX_RESETS:
            log.warning("HTTP/2 client reset %d streams in %.0f s: closing",
                        len(resets), RESET_WINDOW_S)
            self._server.refusals["h2_rapid_reset"] += 1
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM)
            return True
        return False

    def _forget(self, stream_id: int) -> H2Stream | None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            if stream.upload is not None:
                # The handler is told (BodyAbortedError) and ends by itself,
                # keeping what arrived (a tus upload resumes from there).
                stream.upload.fail("the stream was reset or the connection closed")
            elif stream.task is not None:
                stream.task.cancel()
            if stream.owed:
                self._credit(stream_id, stream.owed)
                stream.owed = 0
            self._release(stream)
            if not self._streams:
                self._idle_since = self._server.clock.monotonic()
        return stream

    # --- answers ------------------------------------------------------------------------

    async def _serve(self, stream_id: int, stream: H2Stream) -> None:
        headers = {k: v for k, v in stream.headers if k.startswith(b":")}
        target = headers.get(b":path", b"/").decode("latin-1")
        path, _, query = target.partition("?")
        request = ApiRequest(headers.get(b":method", b"GET").decode("latin-1"), path,
                             parse_query(query),
                             {k.lower(): v for k, v in stream.headers if not k.startswith(b":")},
                             bytes(stream.body), self._transport, stream.upload)
        api = self._server.api
        response = (await api.handle(request) if api is not None
                    else ApiResponse(503, b'{"title": "no API"}', PROBLEM_JSON))
        if self._streams.get(stream_id) is stream:
            self._served += 1
            stream.task = None  # done: nothing to cancel
            upload, stream.upload = stream.upload, None
            self._forget(stream_id)
            self._respond(stream_id, response, head=request.method == "HEAD")
            if upload is not None and not upload.complete:
                # Answered before the body ended (a refusal): stop the rest (§8.1).
                with contextlib.suppress(H2Error):
                    self._h2.reset_stream(stream_id, ErrorCodes.NO_ERROR)
            self._flush_soon()
            if self._finishing:
                self._finished()
        elif response.stream is not None:
            closer = getattr(response.stream, "aclose", None)
            if closer is not None:
                await closer()

    def _answer_early(self, stream_id: int, response: ApiResponse) -> None:
        """Answer before the request is complete, then stop the rest (RFC 9113 §8.1)."""
        self._forget(stream_id)
        self._respond(stream_id, response)
        with contextlib.suppress(H2Error):
            self._h2.reset_stream(stream_id, ErrorCodes.NO_ERROR)
        self._pending.pop(stream_id, None)
        self._flush_soon()

    def _respond(self, stream_id: int, response: ApiResponse, *, head: bool = False) -> None:
        body = b"" if head or response.status == 204 else response.body
        streamed = response.stream is not None and not head
        headers = [(b":status", str(response.status).encode()),
                   (b"server", SERVER_HEADER), *response.headers]
        if response.status != 204:
            headers += [(b"content-type", response.content_type),
                        (b"content-length", str(response.body_length).encode())]
        try:
            self._h2.send_headers(stream_id, headers, end_stream=not (body or streamed))
        except (StreamClosedError, ProtocolError):
            streamed = False  # the client gave up on this stream
        if response.stream is not None:
            if streamed:
                self._downloads.start(stream_id, response)
            else:
                spawn(close_stream(response), name="h2-download-close")
            return
        if body:
            self._pending[stream_id] = body
            self._send_pending()

    def _send_pending(self) -> None:
        if self._stalled_at:
            return  # the client is not reading: resume_writing sends the rest
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
        if self._finishing and not self._pending:
            self._finished()

    # --- streamed bodies (uploads and downloads, issue 15) --------------------------------

    def _upload_consumed(self, stream_id: int, size: int) -> None:
        self._credit(stream_id, size)
        self._flush_soon()

    def _upload_started(self, stream_id: int) -> None:
        """The handler reads (the caller is authenticated): open a wide window."""
        with contextlib.suppress(H2Error):
            self._h2.increment_flow_control_window(UPLOAD_WINDOW - H2_STREAM_WINDOW, stream_id)
            if not self._upload_window_opened:
                self._upload_window_opened = True
                self._h2.increment_flow_control_window(UPLOAD_WINDOW)
        self._flush_soon()

    # What `H2Downloads` needs of this connection (`DownloadOutput`).

    @property
    def writable(self) -> bool:
        return self._transport is not None and not self._closing

    @property
    def stalled(self) -> bool:
        return bool(self._stalled_at)

    def download_ended(self) -> None:
        self._idle_since = self._server.clock.monotonic()  # keep-alive runs from the end
        if self._finishing:
            self._finished()

    # --- flow of our output -------------------------------------------------------------

    def pause_writing(self) -> None:
        """The client does not read: read nothing more from it (so answer nothing more)."""
        self._stalled_at = self._server.clock.monotonic()
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._stalled_at = 0.0
        self._downloads.wake()
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()
            self._send_pending()

    def _flush_soon(self) -> None:
        """Write once the loop turn's other responses are in (one syscall for all)."""
        if not self._flush_queued:
            self._flush_queued = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_queued = False
        if self._closing:
            return  # after GOAWAY (and perhaps a half-close) nothing more is written
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    flush, flush_soon = _flush, _flush_soon  # what `H2Downloads` calls (`DownloadOutput`)

    # --- deadlines and the end -------------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        """The deadline scan: requests arrive in time, idle connections go, and a
        client that stopped reading is cut.  PINGs do not keep a connection open."""
        bounds = self._bounds
        if self._stalled_at and now - self._stalled_at > bounds.send_timeout_s:
            self.abort()
            return
        # A request not whole in time; or an upload that stalls: not while its
        # handler has unread bytes (the disk is the slow side) or has not begun
        # to read.  Its handler is told (BodyAbortedError); the client gets 408.
        late = [sid for sid, s in self._streams.items()
                if now - s.opened_at > bounds.request_timeout_s and (s.task is None or (
                    s.upload is not None and s.upload.started and not s.upload.complete
                    and not s.upload.buffered))]
        for stream_id in late:
            self._server.refusals["http_request_timeout"] += 1
            self._answer_early(stream_id, problem(
                408, "request timeout",
                f"the request did not arrive within {bounds.request_timeout_s} s"))
        if not self._streams and not self._downloads:  # answers waiting for the window do not count
            limit = bounds.keepalive_timeout_s if self._served else bounds.request_timeout_s
            if now - self._idle_since > limit:
                self.close(0, "idle")

    def _goaway(self, code: ErrorCodes) -> None:
        """Send GOAWAY, then close gently enough for the client to read it.

        Closing at once while the client is still sending makes the kernel
        answer with a TCP reset, which can destroy the GOAWAY in flight: so
        half-close, read nothing more (a flood costs nothing meanwhile), and
        abort after a grace period.
        """
        if self._closing:
            return
        with contextlib.suppress(H2Error):  # already closing: the GOAWAY is out
            self._h2.close_connection(error_code=code)
        self._flush()
        transport = self._transport
        self._closing = True
        self._drop_streams()
        if transport is None:
            return
        if transport.can_write_eof():
            transport.write_eof()
            transport.pause_reading()
            asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self.abort)
        else:
            self.close(0, "")

    def _drop_streams(self) -> None:
        for stream_id in list(self._streams):
            self._forget(stream_id)
        self._pending.clear()
        self._downloads.cancel_all()
        self._server.body_budget.forget(self._grant_owed)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._server.connections.discard(self)
        self._drop_streams()

    def abort(self) -> None:
        """Cut the connection now, freeing its buffers."""
        transport, self._transport = self._transport, None
        self._server.connections.discard(self)
        if transport is not None:
            cut(transport)

    def finish(self) -> None:
        """See `Connection.finish`: open streams are answered, new ones refused; GOAWAY
        once the last is answered.  (h2 sends nothing more after its GOAWAY, so the
        GOAWAY comes last, not first.)"""
        self._finishing = True
        self._finished()

    def finished(self) -> bool:
        """See `Connection.finished`: after GOAWAY only its last bytes are on their way."""
        return self._transport is None or self._closing

    def _finished(self) -> None:
        if not self._streams and not self._downloads and not self._pending:
            self.close(0, "server shutting down")

    def close(self, code: int, reason: str) -> None:
        """Close the connection (the native `code` is unused); with a `reason`, GOAWAY."""
        transport = self._transport
        if transport is None:
            return
        if reason and not self._closing:  # the deadline scan or shutdown: say goodbye
            self._goaway(ErrorCodes.NO_ERROR)
            return
        self._transport = None
        close_within(transport)
