"""Name resolution for the preview fetcher: once per request, bounded.

The fetcher resolves a name here exactly once, checks every address with the
`AddressPolicy`, and connects only to those (`fetch.PinnedBackend`): a name
that answers a public address to the check and a private one to the
connection (DNS rebinding) never gets its second question.  `Resolver` is a
protocol so that tests can answer what they like without a DNS server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Protocol

from appliance.errors import PreviewFetchError

IPAddress = IPv4Address | IPv6Address

#: Addresses kept from one answer (a round-robin name may list dozens).
MAX_ADDRESSES = 8
#: Lookups running at once, in threads of their own.
MAX_LOOKUPS = 8
#: Of those, what one owner (an app) may hold, counting the threads still waiting on a
#: name server after their preview gave up (a lookup cannot be cancelled): a name whose
#: servers never answer holds its thread for the system resolver's own timeouts (10-30
#: s), past ``timeout_s``.  Without this, one user's links to such names held every
#: thread, and every app's previews waited behind them and failed.
MAX_OWNER_LOOKUPS = 2


class Resolver(Protocol):
    """Turns a host name into addresses; never called for address literals."""

    async def resolve(self, host: str, port: int, owner: int = 0) -> list[IPAddress]:
        """The addresses of `host` (at least one), in the order to try them.

        `host` is a name in A-labels; a trailing dot makes it absolute (RFC 1034
        §3.1: no search domain is appended).  `owner`: whose lookup it is (an app).

        Raises:
            PreviewFetchError: the name does not resolve (or not in time).
        """
        ...


class SystemResolver:
    """The system's resolver (``getaddrinfo``) in `MAX_LOOKUPS` threads of its own, with a
    time limit.

    A lookup that outlives `timeout_s` keeps its thread until the system
    resolver gives up (``getaddrinfo`` cannot be cancelled); the caller is
    answered at `timeout_s` all the same.  Its own threads, so that a
    black-holed DNS server never occupies the loop's default executor, which
    the rest of the server uses.
    """

    __slots__ = ("_executor", "_running", "max_addresses", "timeout_s")

    def __init__(self, timeout_s: float, max_addresses: int = MAX_ADDRESSES) -> None:
        self.timeout_s = timeout_s
        self.max_addresses = max_addresses
        self._executor = ThreadPoolExecutor(MAX_LOOKUPS, thread_name_prefix="preview-dns")
        #: Lookups per owner queued or in a thread, until the thread is done with them.
        self._running: collections.Counter[int] = collections.Counter()

    def close(self) -> None:
        """Stop the lookup threads (those stuck in getaddrinfo end when it returns)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def resolve(self, host: str, port: int, owner: int = 0) -> list[IPAddress]:
        """See `Resolver.resolve`."""
        if self._running[owner] >= MAX_OWNER_LOOKUPS:
            raise PreviewFetchError(f"{MAX_OWNER_LOOKUPS} lookups of this app still wait on"
                                    " name servers that do not answer; retry later")
        loop = asyncio.get_running_loop()
        lookup: Future[list[tuple[Any, ...]]] = self._executor.submit(
            socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._running[owner] += 1
        # Counted until the thread is done (or the lookup, still queued, is cancelled).
        lookup.add_done_callback(lambda _: _call_soon(loop, self._done, owner))
        try:
            async with asyncio.timeout(self.timeout_s):
                infos = await asyncio.wrap_future(lookup)
        except TimeoutError:
            raise PreviewFetchError(f"{host} did not resolve within {self.timeout_s:g} s") \
                from None
        except (OSError, UnicodeError):
            raise PreviewFetchError(f"{host} does not resolve") from None
        addresses: list[IPAddress] = []
        for _, _, _, _, sockaddr in infos:
            text = sockaddr[0]
            if not isinstance(text, str):
                continue  # not an internet address
            try:
                ip = ip_address(text.partition("%")[0])  # a scope id: link-local, refused anyway
            except ValueError:
                continue
            if ip not in addresses:
                addresses.append(ip)
            if len(addresses) >= self.max_addresses:
                break
        if not addresses:
            raise PreviewFetchError(f"{host} has no IPv4 or IPv6 address")
        return addresses

    def _done(self, owner: int) -> None:
        self._running[owner] -= 1
        if self._running[owner] <= 0:
            del self._running[owner]


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[int], None],
               owner: int) -> None:
    """From a lookup thread: `callback(owner)` on the loop (not at all once it closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, owner)
