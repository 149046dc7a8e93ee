"""A small HTTP/1.1 client for the file routes: asyncio streams and h11 (RFC 9112).

The files API is on the port the native protocol uses (the server tells them
apart by their first bytes), in clear or inside the same TLS.  This client
sends one request at a time per connection, keeps an idle connection for the
next request, and bounds what a server can make it hold: a response head of
`MAX_HEAD_BYTES`, a JSON document of `MAX_DOCUMENT_BYTES`, reads of
`READ_BYTES`; every wait has a deadline.  Network failures and broken HTTP
come out as `TransferInterruptedError` (the caller retries); nothing of
h11, ssl or OSError crosses this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11

from appliance import __version__
from appliance.sdk.errors import FileTransferError, TransferInterruptedError

#: Bytes asked of the socket per read.
READ_BYTES = 64 * 1024
#: A response's status line and headers (h11's own default, stated).
MAX_HEAD_BYTES = 16 * 1024
#: JSON answers (file documents, problem+json, links).
MAX_DOCUMENT_BYTES = 64 * 1024
#: How long a request with ``Expect: 100-continue`` waits before it sends its body
#: anyway (RFC 9110 §10.1.1: a client need not wait indefinitely).
CONTINUE_WAIT_S = 1.0
_USER_AGENT = f"tidings-sdk/{__version__}".encode()

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the server is, and how to talk to it (the `Client`'s settings)."""

    host: str
    port: int
    token: bytes
    ssl: ssl_module.SSLContext | None = None
    connect_timeout_s: float = 10.0
    #: The longest silence of the server (or of its reading) within a request.
    io_timeout_s: float = 60.0

    @property
    def authority(self) -> str:
        """``host:port`` for the Host header and URLs (IPv6 in brackets, RFC 3986)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{'https' if self.ssl is not None else 'http'}://{self.authority}"


@dataclass(frozen=True, slots=True)
class Response:
    """A response's status and headers (names lowercase; repeats joined with ", ")."""

    status: int
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def _interrupted(what: str, exc: BaseException) -> TransferInterruptedError:
    reason = str(exc) or type(exc).__name__
    return TransferInterruptedError(f"{what}: {reason}"[:300])


class HttpConnection:
    """One HTTP/1.1 connection; `request` then `body`/`document`/`discard`, again."""

    def __init__(self, endpoint: Endpoint, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.endpoint = endpoint
        self._reader = reader
        self._writer = writer
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._broken = False

    @classmethod
    async def open(cls, endpoint: Endpoint) -> HttpConnection:
        """Connect (TCP, then TLS when the endpoint has a context).

        Raises:
            TransferInterruptedError: unreachable, refused, timed out.
            FileTransferError: the server's certificate is not trusted (not retried).
        """
        try:
            async with asyncio.timeout(endpoint.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    endpoint.host, endpoint.port, ssl=endpoint.ssl, limit=READ_BYTES,
                    server_hostname=endpoint.host if endpoint.ssl is not None else None)
        except ssl_module.SSLCertVerificationError as exc:
            raise FileTransferError(f"TLS: {exc.verify_message or exc}") from None
        except (OSError, TimeoutError) as exc:
            raise _interrupted(f"cannot connect to {endpoint.authority}", exc) from None
        tls = writer.get_extra_info("ssl_object")
        if tls is not None and tls.selected_alpn_protocol() not in (None, "http/1.1"):
            writer.close()
            raise FileTransferError("the TLS context offers ALPN protocols other than"
                                    " http/1.1: give the client one without ALPN")
        return cls(endpoint, reader, writer)

    @property
    def reusable(self) -> bool:
        """Idle and open: the next request may use it."""
        return (not self._broken and self._h11.our_state is h11.IDLE
                and self._h11.their_state is h11.IDLE and not self._reader.at_eof()
                and not self._writer.is_closing())

    def close(self) -> None:
        self._broken = True
        if not self._writer.is_closing():
            self._writer.close()

    async def request(self, method: str, target: str, headers: Headers | None = None, *,
                      body: bytes = b"", chunks: AsyncIterator[bytes] | None = None,
                      length: int | None = None, expect_continue: bool = False) -> Response:
        """Send a request and return the response's head; its body is read next.

        The body is `body`, or `chunks` of `length` bytes in all (streamed: each
        is written when the socket takes the one before).  With `expect_continue`
        a final answer that comes first (an error: the server read nothing) is
        returned without the body being sent; the connection is then closed.

        Raises:
            TransferInterruptedError: the connection failed, or the server went
                silent for `io_timeout_s`.
        """
        if chunks is not None and length is None:
            raise ValueError("a streamed body needs its length")
        sent = [(b"host", self.endpoint.authority.encode()), (b"user-agent", _USER_AGENT),
                (b"authorization", b"Bearer " + self.endpoint.token)]
        if chunks is None:
            length = len(body)
        if length or method in ("POST", "PUT", "PATCH"):
            sent.append((b"content-length", str(length).encode()))
        if expect_continue:
            sent.append((b"expect", b"100-continue"))
        sent.extend(headers or ())
        try:
            self._write(h11.Request(method=method, target=target, headers=sent))
            if expect_continue:
                early = await self._await_continue()
                if early is not None:
                    self._broken = True  # the body was not sent: this exchange cannot end
                    return early
            try:
                if chunks is not None:
                    async for chunk in chunks:
                        self._write(h11.Data(data=chunk))
                        await self._drain()
                elif body:
                    self._write(h11.Data(data=body))
                self._write(h11.EndOfMessage())
                await self._drain()
            except OSError as exc:
                if isinstance(exc, TimeoutError):
                    raise
                # The server may have answered and closed (an error before the
                # body was read): its answer is worth more than our write error.
                self._broken = True
                return await self._response()
            return await self._response()
        except h11.LocalProtocolError as exc:  # the chunks were not `length` bytes
            self.close()
            raise FileTransferError(f"request body: {exc}") from None
        except (OSError, h11.RemoteProtocolError, TimeoutError) as exc:
            self.close()
            raise _interrupted(f"{method} {target.partition('?')[0]}", exc) from None
        except BaseException:  # cancelled, or the body's source failed: mid-request
            self.close()
            raise

    async def body(self) -> AsyncIterator[bytes]:
        """The response's body as it arrives (chunks of at most `READ_BYTES`).

        Raises:
            TransferInterruptedError: cut before its end.
        """
        try:
            while True:
                event = await self._next_event()
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._next_cycle()
                    return
                else:
                    raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}")
        except (OSError, h11.RemoteProtocolError, TimeoutError) as exc:
            self.close()
            raise _interrupted("reading the response", exc) from None
        except BaseException:  # cancelled, or the consumer failed: mid-body
            self.close()
            raise

    async def document(self, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
        """The whole (small) body; a longer one is cut off at `limit` and the
        connection closed."""
        data = bytearray()
        async for chunk in self.body():
            data += chunk
            if len(data) > limit:
                self.close()
                return bytes(data[:limit])
        return bytes(data)

    async def discard(self) -> None:
        """Read and drop a body we do not need (or close if it is large)."""
        await self.document(MAX_DOCUMENT_BYTES)

    # --- internals ------------------------------------------------------------------------

    def _write(self, event: h11.Event) -> None:
        data = self._h11.send(event)
        if data:
            self._writer.write(data)

    async def _drain(self) -> None:
        async with asyncio.timeout(self.endpoint.io_timeout_s):
            await self._writer.drain()

    async def _await_continue(self) -> Response | None:
        """``100 Continue`` (or silence): None; a final response first: it."""
        await self._drain()
        try:
            async with asyncio.timeout(CONTINUE_WAIT_S):
                event = await self._next_event()
        except TimeoutError:
            return None
        if isinstance(event, h11.InformationalResponse):
            return None
        return self._head(event)

    async def _response(self) -> Response:
        while True:
            event = await self._next_event()
            if not isinstance(event, h11.InformationalResponse):
                return self._head(event)

    def _head(self, event: h11.Event | type[h11.PAUSED]) -> Response:
        if not isinstance(event, h11.Response):
            raise h11.RemoteProtocolError(f"expected a response, got {event!r}"[:100])
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return Response(event.status_code, headers)

    async def _next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self._h11.next_event()
            if event is h11.PAUSED or isinstance(event, h11.Event):
                if isinstance(event, h11.ConnectionClosed):
                    raise h11.RemoteProtocolError("the server closed the connection")
                return event
            async with asyncio.timeout(self.endpoint.io_timeout_s):
                data = await self._reader.read(READ_BYTES)
            self._h11.receive_data(data)  # b"": the server closed its side

    def _next_cycle(self) -> None:
        conn = self._h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE and not self._broken:
            with contextlib.suppress(h11.LocalProtocolError):
                conn.start_next_cycle()
                return
        self.close()
