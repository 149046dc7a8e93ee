"""HTTP/1.1 on the shared port (h11), and the upgrade to WebSocket (SPEC M12).

A connection whose first bytes look like an HTTP/1 request is handed here by
`WireProtocol`.  Every request is bounded: headers by `MAX_HEADER_BYTES`,
bodies by `MAX_BODY_BYTES`, the number of requests per connection by
`MAX_REQUESTS`.  Errors are RFC 9457 problem+json.

Deadlines (checked by the server's scan): a request must arrive whole within
`request_timeout_s` of its first byte (slowloris), an idle keep-alive
connection is closed after `keepalive_timeout_s`, and there is none while the
server works on an answer.  A client that does not read its answers
(pipelining) is not read from once its output passes the high-water mark, so
no further request is answered, and is cut after `send_timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from http import HTTPStatus

import h11

from appliance.api.http import (
    PROBLEM_JSON,
    ApiRequest,
    ApiResponse,
    parse_query,
    problem,
    rate_limited,
)
from appliance.ratelimit import TokenBucket
from appliance.transport.bodystream import STREAM_BUFFER_BYTES, StreamedBody
from appliance.transport.bounds import (
    CLOSE_GRACE_S,
    HELD_BY_BUDGET,
    HELD_BY_OUTPUT,
    HELD_BY_PROTOCOL,
    HELD_BY_READER,
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_REQUESTS,
    SERVER_HEADER,
    close_within,
    cut,
    hold,
    release,
    set_write_limits,
)
from appliance.transport.host import Host
from appliance.transport.tasks import spawn
from appliance.transport.websocket import WebSocketCarrier

log = logging.getLogger(__name__)

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection; becomes a WebSocket carrier on upgrade."""

    __slots__ = ("_body", "_bucket", "_budgeted", "_busy", "_deadline", "_drained", "_h11",
                 "_held", "_raw", "_receiving", "_request", "_requests", "_server", "_stalled_at",
                 "_transport", "_upload")

    def __init__(self, server: Host, transport: asyncio.Transport) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = transport
        self._h11: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._raw = bytearray()
        self._body = bytearray()
        #: Body bytes counted against the server's budget (`Host.body_budget`).
        self._budgeted = 0
        self._request: h11.Request | None = None
        self._requests = 0
        self._busy = False  # a request is being answered
        self._held = 0
        now = server.clock.monotonic()
        self._bucket = TokenBucket(now)
        #: A request has begun to arrive (its deadline runs), or none has yet
        #: (then the keep-alive deadline runs).  The first one runs from now.
        self._receiving = True
        self._deadline = now + server.bounds.request_timeout_s
        self._stalled_at = 0.0  # when the output went above the high-water mark
        #: A streamed upload's body on its way to its handler (routes with stream=True).
        self._upload: StreamedBody | None = None
        #: A streamed download waiting for the client to read (resume_writing).
        self._drained: asyncio.Future[None] | None = None
        set_write_limits(transport, server.bounds.output_high_water_bytes)
        server.connections.add(self)

    # --- asyncio callbacks (forwarded by WireProtocol's hand-over) -------------------

    def data_received(self, data: bytes) -> None:
        conn = self._h11
        if conn is None:
            return
        if not self._receiving and not self._busy:
            self._receiving = True  # a new request: its deadline starts
            self._deadline = self._server.clock.monotonic() + self._server.bounds.request_timeout_s
        if self._request is None:
            self._raw += data  # an upgrade hands the raw request to wsproto
        conn.receive_data(data)
        if self._busy and (self._upload is None or self._upload.complete):
            # A pipelining client: stop reading until every request buffered so
            # far is answered (two epoll changes, so only when it happens, not
            # per request), so that what it sends waits in its own kernel.
            self._hold(HELD_BY_PROTOCOL)
            return
        self._process()

    def _hold(self, reason: int) -> None:
        self._held = hold(self._transport, self._held, reason)

    def _release(self, reason: int) -> None:
        self._held = release(self._transport, self._held, reason)

    def pause_writing(self) -> None:
        """The client does not read its answers: no more requests until it does."""
        self._stalled_at = self._server.clock.monotonic()
        self._hold(HELD_BY_OUTPUT)

    def resume_writing(self) -> None:
        self._stalled_at = 0.0
        self._wake_writer()
        self._release(HELD_BY_OUTPUT)
        if not self._busy:
            self._process()  # a pipelined request may be buffered already

    def check_deadline(self, now: float) -> None:
        """The deadline scan: a request arrives in time, an idle connection goes,
        a client that stopped reading is cut; none while an answer is worked on."""
        bounds = self._server.bounds
        if self._stalled_at and now - self._stalled_at > bounds.send_timeout_s:
            self._drop()
        elif self._held & HELD_BY_READER:
            # An upload waits for its handler (the disk), not for the client.
            self._deadline = now + bounds.request_timeout_s
        elif now > self._deadline:
            self.close(0, "the request did not arrive in time" if self._receiving else "")

    def _process(self) -> None:
        """Handle what h11 has buffered, up to a complete request (then answer it)."""
        while (self._h11 is not None and self._transport is not None and not self._stalled_at
               and (not self._busy or (self._upload is not None and not self._upload.complete))):
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                title = "request header fields too large" if status == 431 else "bad request"
                self._fail(problem(431 if "too large" in str(exc).lower() else status, title,
                                    str(exc)))
                return
            if event is h11.NEED_DATA:
                self._release(HELD_BY_PROTOCOL)  # all buffered requests are answered
                return
            if event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                if not self._on_request(event):
                    return
            elif isinstance(event, h11.Data):
                if self._upload is not None:
                    self._feed(event.data)
                    continue
                self._body += event.data
                if len(self._body) > MAX_BODY_BYTES:
                    self._fail(problem(413, "content too large",
                                        f"bodies are limited to {MAX_BODY_BYTES} bytes"))
                    return
                self._spend(len(event.data))
            elif isinstance(event, h11.EndOfMessage):
                if self._upload is not None:
                    self._upload.finish()  # its handler runs already
                    self._deadline = math.inf
                    return
                self._busy = True  # one request at a time (HTTP/1.1)
                self._deadline = math.inf  # none while the server works on the answer
                spawn(self._respond(), name="http-request")
                return
            elif isinstance(event, h11.ConnectionClosed):
                self.close(0, "")
                return

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._server.connections.discard(self)
        if self._upload is not None:
            self._upload.fail("the connection closed before the body was complete")
        self._wake_writer()
        self._refund()

    # --- streamed bodies (uploads and downloads, issue 15) --------------------------------

    def _feed(self, data: bytes) -> None:
        upload = self._upload
        assert upload is not None
        upload.feed(data)
        self._spend(len(data))
        self._deadline = self._server.clock.monotonic() + self._server.bounds.request_timeout_s
        if upload.buffered >= STREAM_BUFFER_BYTES:
            self._hold(HELD_BY_READER)  # the client waits in its own kernel

    def _upload_consumed(self, size: int) -> None:
        if self._budgeted:
            size = min(size, self._budgeted)
            self._budgeted -= size
            self._server.body_budget.release(size)
        if self._held & HELD_BY_READER:
            self._deadline = self._server.clock.monotonic() + self._server.bounds.request_timeout_s
            self._release(HELD_BY_READER)
            self._process()  # h11 may hold more of the body already

    def _upload_started(self) -> None:
        """The handler wants the body (its caller is authenticated): read it now; an
        ``Expect: 100-continue`` client may send it now."""
        conn, transport = self._h11, self._transport
        if conn is not None and transport is not None and conn.they_are_waiting_for_100_continue:
            transport.write(conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                            or b"")
        upload = self._upload
        if self._held & HELD_BY_READER and upload is not None and (
                upload.buffered < STREAM_BUFFER_BYTES):
            self._release(HELD_BY_READER)
            self._process()  # h11 may hold more of the body already

    def _wake_writer(self) -> None:
        waiter, self._drained = self._drained, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _send_stream(self, response: ApiResponse, head: bool) -> None:
        """Write a streamed body as the client takes it (the high-water mark)."""
        stream = response.stream
        assert stream is not None
        try:
            conn, transport = self._h11, self._transport
            if conn is None or transport is None:
                return
            headers = [(b"content-type", response.content_type),
                       (b"content-length", str(response.length).encode()),
                       (b"server", SERVER_HEADER), *response.headers]
            if self._server.stopping:  # the last answer of a stopping server, as `_send`'s
                headers.append((b"connection", b"close"))
            transport.write(conn.send(h11.Response(
                status_code=response.status, headers=headers,
                reason=_REASONS[response.status])) or b"")
            if not head:
                async for chunk in stream:
                    if self._transport is None or self._h11 is None:
                        return
                    # Pass-through: no copy of the chunk into one bytes object.
                    transport.writelines(conn.send_with_data_passthrough(h11.Data(data=chunk))
                                         or ())
                    while self._stalled_at and self._transport is not None:
                        self._drained = asyncio.get_running_loop().create_future()
                        await self._drained
            if self._transport is not None and self._h11 is not None:
                transport.write(conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # the body was not `length` bytes: cut, never pad
            log.error("a streamed response was not its declared %d bytes", response.length)
            self._drop()
        except Exception:  # its source failed (a disk error)
            # Cut, so the client sees a short body: otherwise the connection
            # waits forever (no deadline runs while an answer is written).
            log.exception("a streamed response failed")
            self._drop()
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()

    # --- the server's budget for bodies in flight ----------------------------------------

    def _spend(self, size: int) -> None:
        """Count received body bytes; past the server's budget, read no more for now.

        The bytes are here already (forced): what the budget stops is more of
        them.  Held bodies of many connections once took +260 MiB (issue 12);
        now every connection stops within one read once the budget is spent.
        """
        budget = self._server.body_budget
        budget.take(size, force=True)
        self._budgeted += size
        if budget.used > budget.limit:
            self._hold(HELD_BY_BUDGET)
            budget.wait(self._budget_freed)

    def _budget_freed(self) -> None:
        budget = self._server.body_budget
        if self._transport is None:
            return
        if budget.used > budget.limit:
            budget.wait(self._budget_freed)
        else:
            self._release(HELD_BY_BUDGET)

    def _refund(self) -> None:
        if self._budgeted:
            budget = self._server.body_budget
            budget.forget(self._budget_freed)
            self._budgeted, spent = 0, self._budgeted
            budget.release(spent)

    # --- requests ---------------------------------------------------------------------

    def _on_request(self, request: h11.Request) -> bool:
        self._request = request
        self._requests += 1
        if not self._receiving:  # pipelined: it was buffered, its deadline starts now
            self._receiving = True
            self._deadline = self._server.clock.monotonic() + self._server.bounds.request_timeout_s
        if not self._bucket.take(self._server.clock.monotonic()):
            self._server.refusals["http_rate_limited"] += 1
            self._fail(rate_limited())
            return False
        # h11 bounds only what it must buffer; a header block that arrives
        # whole in one read is measured here.
        size = len(request.target) + sum(len(k) + len(v) + 4 for k, v in request.headers)
        if size > MAX_HEADER_BYTES:
            self._fail(problem(431, "request header fields too large",
                                f"headers are limited to {MAX_HEADER_BYTES} bytes"))
            return False
        headers = {k.lower(): v for k, v in request.headers}
        if headers.get(b"upgrade", b"").lower() == b"websocket":
            return self._upgrade()
        length = headers.get(b"content-length")
        api = self._server.api
        if api is not None and api.streams(request.method.decode("latin-1"),
                                           request.target.partition(b"?")[0].decode("latin-1")):
            # An upload: its handler starts now and reads the body as it comes
            # (its own limits apply, not MAX_BODY_BYTES).
            self._upload = StreamedBody(int(length) if length is not None else None,
                                        consumed=self._upload_consumed,
                                        started=self._upload_started)
            self._busy = True
            self._deadline = self._server.clock.monotonic() + self._server.bounds.request_timeout_s
            # Not a byte more of the body until the handler asks for it (after
            # authentication): a refused upload costs what came with its head,
            # not the server's body budget (HTTP/2 keeps its window shut so).
            self._hold(HELD_BY_READER)
            spawn(self._respond(), name="http-upload")
            return True
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            self._fail(problem(413, "content too large",
                                f"bodies are limited to {MAX_BODY_BYTES} bytes"))
            return False
        return True

    def _upgrade(self) -> bool:
        assert self._transport is not None
        raw = bytes(self._raw)
        assert self._h11 is not None
        # What came behind the request (a client's first frames, sent before the 101:
        # RFC 6455 §4.1 allows it) is the carrier's; h11 has not consumed it.
        early = self._h11.trailing_data[0]
        self._h11 = None
        self._raw = bytearray()
        self._server.connections.discard(self)
        carrier = WebSocketCarrier(self._server, self._transport,
                                   self._server.limits.max_frame_bytes * 4)
        # The carrier takes the connection over; this object is then dropped.
        # Under the acceptor's gate, the gate forwards to it (it still learns
        # when the connection ends); inside TLS, the TLS carrier does.
        adopt = getattr(self._transport.get_protocol(), "adopt", None)
        if adopt is not None:
            adopt(carrier)
        else:
            self._transport.set_protocol(carrier)
        self._transport = None
        head = raw[:len(raw) - len(early)] if early and raw.endswith(early) else raw
        return carrier.start(head, early)

    async def _respond(self) -> None:
        request = self._request
        assert request is not None
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        api_request = ApiRequest(
            request.method.decode("latin-1"), path,
            parse_query(query),
            {k.lower(): v for k, v in request.headers}, bytes(self._body), self._transport,
            self._upload)
        api = self._server.api
        if api is None:
            response = ApiResponse(503, b'{"title": "no API"}', PROBLEM_JSON)
        else:
            response = await api.handle(api_request)
        upload, self._upload = self._upload, None
        if upload is not None and not upload.complete:
            # Answered before the whole body came (a refusal): the rest is not
            # read, so this connection cannot carry another request.
            upload.fail("answered before the body was complete")
            self._fail(response)
            return
        if response.stream is not None:
            await self._send_stream(response, head=api_request.method == "HEAD")
        else:
            self._send(response.status, response.body, response.content_type,
                       head=api_request.method == "HEAD", extra=response.headers)
        self._busy = False
        # An upload answered without a read (a refusal: its body came whole with
        # its head) leaves reading held for its reader: the next request is read.
        self._release(HELD_BY_READER)
        self._next_request()
        self._process()  # a pipelined request may be buffered already

    def _next_request(self) -> None:
        conn = self._h11
        self._request = None
        self._raw = bytearray()
        self._body = bytearray()
        self._refund()
        self._receiving = False  # idle until the next request's first byte
        self._deadline = self._server.clock.monotonic() + self._server.bounds.keepalive_timeout_s
        if conn is None or self._transport is None:
            return
        if conn.our_state is h11.MUST_CLOSE or self._requests >= MAX_REQUESTS \
                or self._server.stopping:  # a streamed answer begun before SIGTERM
            self.close(0, "")
            return
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            self.close(0, "")

    def _send(self, status: int, body: bytes, content_type: bytes = b"application/json", *,
              head: bool = False, close: bool = False,
              extra: list[tuple[bytes, bytes]] | None = None) -> None:
        conn, transport = self._h11, self._transport
        if conn is None or transport is None:
            return
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                   (b"server", SERVER_HEADER)]
        if close or self._server.stopping:  # the last answer of a stopping server
            headers.append((b"connection", b"close"))
        headers.extend(extra or ())
        try:
            if status == 204:
                headers = [h for h in headers if h[0] != b"content-length"]
                body = b""
            # Our own headers need no validation (~10 % of a request in h11);
            # a handler's extra ones get it.
            data = conn.send(h11.Response(status_code=status, headers=headers,
                                          reason=_REASONS[status], _parsed=not extra))
            if body and not head:
                data += conn.send(h11.Data(data=body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            self.close(0, "")
            return
        transport.write(data or b"")

    def _fail(self, response: ApiResponse) -> None:
        """Answer an error that ends the connection, then close it."""
        conn = self._h11
        if conn is not None and conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._send(response.status, response.body, response.content_type, close=True,
                       extra=response.headers)
        transport = self._transport
        if transport is not None and transport.can_write_eof():
            # Close gently: a client still sending would otherwise get a TCP
            # reset that can destroy this answer in flight.  Half-close, drop
            # what still arrives, and cut off after a grace period.
            self._h11 = None
            # Drain what the client still sends (a refused upload's body) so that
            # it can finish sending and read the answer; reading may have been
            # held for the upload's reader or the body budget.
            self._held = release(transport, self._held, self._held)
            transport.write_eof()
            asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self._drop)
            return
        self.close(0, "")

    # --- what the server's deadline scan and shutdown call ---------------------------------

    def finish(self) -> None:
        """See `Connection.finish`: a request that has begun is answered, and the
        answer closes the connection (`_send`); an idle one closes now."""
        if self._busy or self._raw or self._request is not None:
            return
        # No reason, so no 408: nothing is on its way, and a request sent meanwhile
        # would read the 408 as its answer instead of retrying elsewhere.
        self.close(0, "")

    def finished(self) -> bool:
        """See `Connection.finished` (after `_fail`, only its answer is on its way)."""
        return self._transport is None or self._h11 is None

    def close(self, code: int, reason: str) -> None:
        """Close the connection (`code` is the native protocol's; unused).

        With a `reason` and a request on its way, the client is told why (408).
        """
        transport, self._transport = self._transport, None
        if transport is not None:
            if self._h11 is not None and self._h11.our_state is h11.IDLE and reason:
                self._server.refusals["http_request_timeout"] += 1
                timeout = problem(408, "request timeout", reason)
                self._transport = transport
                self._send(timeout.status, timeout.body, timeout.content_type, close=True)
                self._transport = None
            close_within(transport)

    def _drop(self) -> None:
        """Cut the connection and free its buffers now (a client that does not read)."""
        self._server.connections.discard(self)
        transport, self._transport = self._transport, None
        if transport is not None:
            cut(transport)
