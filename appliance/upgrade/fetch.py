"""Bounded downloads from the release server.

HTTPS only (plain HTTP only to this machine's loopback, for tests), a
redirect may not leave those rules, every read has a timeout and every
download an overall deadline and a byte bound: a server that sends an
endless body, a huge file or nothing at all costs at most that.  Trust:
the system's CA bundle plus certifi's (the one-file executable may run on a
host whose bundle is elsewhere); authenticity comes from the signature
anyway (`appliance.release.verify`).
"""

from __future__ import annotations

import ipaddress
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import IO, Final
from urllib.parse import urlsplit

from appliance import __version__
from appliance.errors import ReleaseError

#: Where releases are published; installer/install.sh's DEFAULT_BASE_URL is the same.
DEFAULT_BASE_URL: Final = "https://releases.tidings.dev"
#: Bound on one network read (connect, or the next bytes of a body).
DEFAULT_TIMEOUT_S: Final = 30.0
#: Bound on a whole download, whatever the server's pace.
SMALL_FILE_DEADLINE_S: Final = 60.0
MAX_REDIRECTS: Final = 5
_CHUNK: Final = 64 * 1024
_LOOPBACK_NAMES: Final = frozenset({"localhost"})


def check_url(url: str) -> str:
    """`url` without a trailing slash, if it is https, or http to the loopback.

    Raises:
        ReleaseError: any other scheme or host.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return url.rstrip("/")
    if parts.scheme == "http" and _loopback(host):
        return url.rstrip("/")
    raise ReleaseError(f"release URL must be https:// (http:// only to this machine's"
                       f" loopback): {url[:200]!r}")


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                         msg: str, headers: object, newurl: str
                         ) -> urllib.request.Request | None:
        check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)  # type: ignore[arg-type]


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    try:
        import certifi

        context.load_verify_locations(certifi.where())
    except (ImportError, OSError):  # the system bundle alone, then
        pass
    return context


class Fetcher:
    """GETs below one base URL with the bounds above."""

    def __init__(self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = check_url(base_url)
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=_tls_context()), _Redirects())

    def url(self, version: str | None, name: str) -> str:
        """``<base>/<version>/<name>``; ``latest`` when no version is asked for."""
        return f"{self.base_url}/{version or 'latest'}/{name}"

    def get(self, url: str, limit: int) -> bytes:
        """The body of `url`, at most `limit` bytes, within `SMALL_FILE_DEADLINE_S`.

        Raises:
            ReleaseError: unreachable, an HTTP error, too large, too slow.
        """
        parts: list[bytes] = []
        self.stream(url, limit, parts.append, SMALL_FILE_DEADLINE_S)
        return b"".join(parts)

    def stream(self, url: str, limit: int, sink: Callable[[bytes], object],
               deadline_s: float) -> int:
        """Pass the body of `url` to `sink` in chunks; returns its size.

        Raises:
            ReleaseError: unreachable, an HTTP error, more than `limit` bytes,
                or not done within `deadline_s`.
        """
        check_url(url)
        request = urllib.request.Request(url, headers={
            "User-Agent": f"tidings/{__version__} (upgrade)", "Accept-Encoding": "identity"})
        deadline = time.monotonic() + deadline_s
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise ReleaseError(f"{url}: {declared} bytes, more than the {limit}"
                                       " allowed")
                size = 0
                # read1: whatever one recv brings (read() would wait for a whole chunk).
                while block := response.read1(_CHUNK):
                    size += len(block)
                    if size > limit:
                        raise ReleaseError(f"{url}: more than the {limit} bytes allowed")
                    if time.monotonic() > deadline:
                        raise ReleaseError(f"{url}: not downloaded within {deadline_s:.0f} s")
                    sink(block)
                return size
        except urllib.error.HTTPError as exc:
            raise ReleaseError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise ReleaseError(f"{url}: {exc.reason}") from None
        except (TimeoutError, OSError) as exc:
            raise ReleaseError(f"{url}: {str(exc) or type(exc).__name__}") from None
