"""A real HTTP/1.1 server on 127.0.0.1 (port 0) for the preview tests: the Internet's stand-in.

Each route is a coroutine writing raw bytes, so a test can be any server:
honest, slow, endless, oversized, redirecting.  Every request is recorded
(path, headers, the SNI name over TLS) so a test can prove what reached it.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

#: The start of an HTML answer without a length: the body runs until the server closes.
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    server_name: str | None = None  # TLS SNI, when over TLS


Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


def response(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response with Content-Length."""
    lines = [f"HTTP/1.1 {status} X"]
    for name, value in {"Content-Length": str(len(body)), "Connection": "close",
                        **(headers or {})}.items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def page(html: str | bytes, content_type: str = "text/html; charset=utf-8") -> Handler:
    body = html.encode() if isinstance(html, str) else html
    return raw(response(200, body, {"Content-Type": content_type}))


def raw(data: bytes) -> Handler:
    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
    return handle


def redirect(location: str, status: int = 302) -> Handler:
    return raw(response(status, b"", {"Location": location}))


def endless(head: bytes, chunk: bytes) -> Handler:
    """`head`, then `chunk` again and again until the client hangs up."""
    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(head + b"\r\n")
        while True:
            writer.write(chunk)
            await writer.drain()
    return handle


@functools.cache
def gzip_bomb() -> bytes:
    """1 GiB of zeros, gzip-compressed (about 1 MB; made once, in about 2 s)."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join(squeeze.compress(zeros) for _ in range(1024)) + squeeze.flush()


@dataclass
class WebServer:
    routes: dict[str, Handler] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None
    bind: str = "127.0.0.1"
    requests: list[Request] = field(default_factory=list)
    #: Set when a request arrives (tests wait on it instead of sleeping).
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: asyncio.Server | None = None
    _names: dict[int, str | None] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> WebServer:
        if self.tls is not None:
            self.tls.sni_callback = self._sni
        self._server = await asyncio.start_server(self._serve, self.bind, 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:  # handlers still streaming or stalling
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str = "/", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def _sni(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self._names[id(sock)] = name

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._answer(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        _, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        ssl_object = writer.get_extra_info("ssl_object")
        request = Request(path, headers, self._names.get(id(ssl_object)) if ssl_object else None)
        self.requests.append(request)
        self.arrived.set()
        handler = self.routes.get(path.split("?")[0])
        try:
            if handler is None:
                writer.write(response(404, b"not here"))
            else:
                await handler(request, writer)
            await writer.drain()
        except ConnectionError:
            pass  # the client hung up: what a bounded fetcher does
        finally:
            writer.close()
