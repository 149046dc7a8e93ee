"""The SSRF-safe HTTP client of link previews.

One GET per hop, on httpcore (HTTP/1.1 only, one connection per request,
no pool, no proxy: nothing is read from the environment).  For each hop the
URL is parsed from scratch (`url.parse_url`), its port checked, its name
resolved ONCE and every address checked (`AddressPolicy`); the connection is
then made by `PinnedBackend`, which dials those addresses and no others.
httpcore still knows the URL's host name, so the Host header, TLS SNI and
certificate verification use the name while the socket goes to the checked
address: a second, different answer from the name's DNS (rebinding) is never
asked for.  Redirects are not followed by httpcore: each ``Location`` goes
through the same steps (at most ``max_redirects``; a loop is refused).

Every response is bounded: the whole resource, redirects included, in
``timeout_s`` (connect to last byte: a server sending one header byte a
second is cut there); the header at `MAX_HEADER_BYTES`; the body at
``max_html_bytes``/``max_image_bytes`` counted after decompression
(`decode.BoundedDecoder`) and at that plus `WIRE_SLACK` on the wire.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import httpcore

from appliance.errors import PreviewFetchError
from appliance.media.config import PreviewConfig
from appliance.media.previews.address import AddressPolicy, IPAddress
from appliance.media.previews.decode import BoundedDecoder
from appliance.media.previews.resolve import Resolver
from appliance.media.previews.url import PreviewUrl, check_port, join_url

#: A response's status line and header fields, at most (h11, under httpcore,
#: also refuses an unfinished header past 100 KiB: memory stays bounded).
MAX_HEADER_BYTES = 64 * 1024
#: Compressed bytes read past the decoded limit (an endless run of empty deflate
#: blocks decodes to nothing and must stop too).
WIRE_SLACK = 64 * 1024
#: Addresses of one name tried in turn when a connection is refused.
MAX_CONNECT_ATTEMPTS = 3
#: Image bytes gathered before each write to the temporary file (in a thread).
WRITE_CHUNK = 256 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PAGE_TYPES = ("text/html", "application/xhtml+xml")
_ACCEPT_PAGE = b"text/html,application/xhtml+xml;q=0.9"
_ACCEPT_IMAGE = b"image/webp,image/png,image/jpeg,image/gif;q=0.9,image/*;q=0.5"
# Where a page's head is over: the metadata is read, the rest need not come.
_HEAD_END_RE = re.compile(rb"</head\s*>|<body[\s>]", re.IGNORECASE)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page:
    url: PreviewUrl  # after redirects: relative URLs in the page resolve against it
    content_type: str  # the header's whole value (its charset parameter counts)
    body: bytes  # decoded, at most max_html_bytes
    complete: bool  # False: cut at max_html_bytes before its head ended


@dataclass(frozen=True, slots=True)
class Image:
    url: PreviewUrl
    content_type: str  # the media type alone, e.g. "image/png"
    size: int


@dataclass(frozen=True, slots=True)
class _Redirect:
    location: str


def default_tls_context() -> ssl.SSLContext:
    """Certificate verification with the system's CAs, and certifi's when installed."""
    context = ssl.create_default_context()
    try:
        import certifi

        context.load_verify_locations(certifi.where())
    except (ImportError, OSError):  # the system bundle alone, then
        pass
    return context


# httpcore's network interfaces take per-call timeouts (ASYNC109 below): they are its
# signatures; the fetch as a whole runs under asyncio.timeout.


class _CountingStream(httpcore.AsyncNetworkStream):
    """A connection that counts the bytes it reads (to name an oversized header)."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, backend: PinnedBackend) -> None:
        self._inner, self._backend = inner, backend

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        data = await self._inner.read(max_bytes, timeout)
        self._backend.bytes_read += len(data)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None,  # noqa: ASYNC109
                        ) -> httpcore.AsyncNetworkStream:
        # server_hostname is the URL's host (httpcore's origin): SNI and verification.
        inner = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _CountingStream(inner, self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Dials only the addresses checked for this request: httpcore's host is never resolved."""

    def __init__(self, host: str, port: int, addresses: list[IPAddress],
                 inner: httpcore.AsyncNetworkBackend) -> None:
        self.host, self.port, self.addresses = host, port, addresses
        self._inner = inner
        #: The address connected to, once connected.
        self.connected: IPAddress | None = None
        self.bytes_read = 0

    async def connect_tcp(self, host: str, port: int,
                          timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        if (host, port) != (self.host, self.port):  # one origin per connection: a bug
            raise httpcore.ConnectError(f"connection to {host}:{port} was not checked")
        failure: Exception = httpcore.ConnectError("no address")
        for ip in self.addresses[:MAX_CONNECT_ATTEMPTS]:
            try:
                # An address literal: anyio connects without getaddrinfo.
                stream = await self._inner.connect_tcp(ip.compressed, port, timeout=timeout,
                                                       socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            self.connected = ip
            return _CountingStream(stream, self)
        raise failure

    async def connect_unix_socket(self, path: str,
                                  timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[Any] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("no Unix sockets for previews")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Fetcher:
    """GETs one page or one image under the SSRF rule and the limits of `PreviewConfig`."""

    def __init__(self, config: PreviewConfig, *, resolver: Resolver, policy: AddressPolicy,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._config = config
        self._resolver = resolver
        self._policy = policy
        self._tls = ssl_context if ssl_context is not None else default_tls_context()
        self._user_agent = config.user_agent.encode("ascii", "replace")

    async def page(self, url: PreviewUrl, owner: int = 0) -> Page:
        """The page at `url` (after redirects), its body cut where its head ends.
        `owner`: the app it is fetched for (its names' lookups count against it).

        Raises:
            PreviewRefusedError: a hop's URL or address is refused.
            PreviewFetchError: time, size, status, type or the connection failed.
        """
        return await self._fetch(url, _ACCEPT_PAGE, self._read_page, owner)

    async def image(self, url: PreviewUrl, dest: Path, owner: int = 0) -> Image:
        """Downloads the image at `url` into `dest` (created or truncated).

        Raises:
            PreviewRefusedError, PreviewFetchError: as `page`.
        """
        async def read(final: PreviewUrl, response: httpcore.Response) -> Image:
            return await self._read_image(final, response, dest)

        return await self._fetch(url, _ACCEPT_IMAGE, read, owner)

    async def _fetch(self, url: PreviewUrl, accept: bytes,
                     read: Callable[[PreviewUrl, httpcore.Response], Awaitable[T]],
                     owner: int) -> T:
        seen = {str(url)}
        try:
            async with asyncio.timeout(self._config.timeout_s):
                for _ in range(self._config.max_redirects + 1):
                    outcome = await self._exchange(url, accept, read, owner)
                    if not isinstance(outcome, _Redirect):
                        return outcome
                    url = join_url(url, outcome.location)
                    if str(url) in seen:
                        raise PreviewFetchError(f"redirect loop back to {url.host}")
                    seen.add(str(url))
        except TimeoutError:
            raise PreviewFetchError(f"no whole answer from {url.host} within "
                                    f"{self._config.timeout_s:g} s (media.previews.timeout_s)"
                                    ) from None
        raise PreviewFetchError(f"more than {self._config.max_redirects} redirects"
                                " (media.previews.max_redirects)")

    async def _addresses(self, url: PreviewUrl, owner: int) -> list[IPAddress]:
        check_port(url, self._config.ports)
        if url.ip is not None:
            self._policy.check(url.ip)
            return [url.ip]
        self._policy.check_name(url.host)
        # Asked absolute, so the resolver's search domains cannot complete a name that
        # does not exist into an internal one (foo.example -> foo.example.corp.lan); an
        # operator's allowed name is asked as given (/etc/hosts, search domains).
        query = url.host if self._policy.allows_name(url.host) else url.host + "."
        addresses = await self._resolver.resolve(query, url.port, owner)
        self._policy.check_resolved(url.host, addresses)
        return addresses

    async def _exchange(self, url: PreviewUrl, accept: bytes,
                        read: Callable[[PreviewUrl, httpcore.Response], Awaitable[T]],
                        owner: int) -> T | _Redirect:
        backend = PinnedBackend(url.host, url.port, await self._addresses(url, owner),
                                httpcore.AnyIOBackend())
        scheme, host = url.scheme.encode(), url.host.encode()
        connection = httpcore.AsyncHTTPConnection(
            httpcore.Origin(scheme, host, url.port), ssl_context=self._tls,
            http1=True, http2=False, retries=0, network_backend=backend)
        headers = [(b"Host", url.authority.encode()), (b"User-Agent", self._user_agent),
                   (b"Accept", accept), (b"Accept-Encoding", b"gzip, deflate"),
                   (b"Connection", b"close")]
        timeouts = {"connect": self._config.timeout_s / MAX_CONNECT_ATTEMPTS}
        try:
            async with connection.stream(
                    "GET", httpcore.URL(scheme=scheme, host=host, port=url.port,
                                        target=url.target.encode()),
                    headers=headers, extensions={"timeout": timeouts}) as response:
                if sum(len(k) + len(v) + 4 for k, v in response.headers) > MAX_HEADER_BYTES:
                    raise PreviewFetchError(f"response header larger than {MAX_HEADER_BYTES}"
                                            " bytes")
                if response.status in REDIRECT_STATUSES:
                    location = _header(response, b"location")
                    if location is None:
                        raise PreviewFetchError(f"HTTP {response.status} without Location")
                    return _Redirect(location)
                if response.status not in (200, 203):
                    raise PreviewFetchError(f"{url.host} answered HTTP {response.status}")
                return await read(url, response)
        except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
            raise PreviewFetchError(f"cannot connect to {url.host}: {_why(exc)}") from None
        except httpcore.RemoteProtocolError as exc:
            if backend.bytes_read > MAX_HEADER_BYTES:
                raise PreviewFetchError(f"response header larger than {MAX_HEADER_BYTES}"
                                        " bytes") from None
            raise PreviewFetchError(f"{url.host} broke HTTP/1.1: {_why(exc)}") from None
        except (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError,
                httpcore.UnsupportedProtocol, OSError) as exc:
            raise PreviewFetchError(f"connection to {url.host} failed: {_why(exc)}") from None
        finally:
            await connection.aclose()

    async def _read_page(self, url: PreviewUrl, response: httpcore.Response) -> Page:
        content_type = _header(response, b"content-type") or ""
        media_type = content_type.partition(";")[0].strip().lower()
        if media_type not in PAGE_TYPES:
            raise PreviewFetchError(f"{media_type[:60] or 'no content type'} is not a web page")
        limit = self._config.max_html_bytes
        decoder = BoundedDecoder(_header(response, b"content-encoding") or "", limit)
        body, wire = bytearray(), 0
        async for chunk in response.aiter_stream():
            wire += len(chunk)
            scanned = max(0, len(body) - 8)  # "</head >" may straddle two chunks
            body += decoder.feed(chunk)
            if _HEAD_END_RE.search(body, scanned):
                break  # the rest of the page is not needed (nor read)
            if decoder.exceeded or wire > limit + WIRE_SLACK:
                return Page(url, content_type, bytes(body), complete=False)
        return Page(url, content_type, bytes(body), complete=True)

    async def _read_image(self, url: PreviewUrl, response: httpcore.Response,
                          dest: Path) -> Image:
        media_type = (_header(response, b"content-type") or "").partition(";")[0].strip().lower()
        if not media_type.startswith("image/") or media_type == "image/svg+xml":
            raise PreviewFetchError(f"{media_type[:60] or 'no content type'} is not a"
                                    " raster image")
        limit = self._config.max_image_bytes
        too_large = PreviewFetchError(f"image larger than {limit} bytes"
                                      " (media.previews.max_image_bytes)")
        declared = _header(response, b"content-length") or ""
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        decoder = BoundedDecoder(_header(response, b"content-encoding") or "", limit)
        file: BinaryIO = await asyncio.to_thread(dest.open, "wb")
        try:
            pending, wire = bytearray(), 0
            async for chunk in response.aiter_stream():
                wire += len(chunk)
                pending += decoder.feed(chunk)
                if decoder.exceeded or wire > limit + WIRE_SLACK:
                    raise too_large
                if len(pending) >= WRITE_CHUNK:
                    await asyncio.to_thread(file.write, bytes(pending))
                    pending.clear()
            if decoder.truncated:
                raise PreviewFetchError("compressed image cut short")
            await asyncio.to_thread(file.write, bytes(pending))
        finally:
            await asyncio.to_thread(file.close)
        return Image(url, media_type, decoder.total)


def _header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _why(exc: BaseException) -> str:
    """An exception's message, one bounded line (never a traceback)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
