"""Link previews for users: fetched once, cached, rate-limited (issue 15).

`PreviewService.preview` answers from the cache when it can.  The cache is
keyed by (app, canonical URL): the preview's image is a file of that app,
and nothing crosses apps.  Successes live ``cache_ttl_s``, failures
``failure_ttl_s`` (a refused or dead link is not fetched again each time it
is pasted).  Concurrent requests for one key share one fetch.

The per-user limit (``per_user_per_minute``) counts cache misses only: a
miss makes the server fetch up to two resources from the Internet, a hit
costs a dictionary lookup, and joining a fetch already under way costs
nothing more.  A user who pastes one popular link many times is not refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import (
    ApplianceError,
    PreviewFetchError,
    PreviewRefusedError,
    TooManyRequestsError,
)
from appliance.media.config import PreviewConfig
from appliance.media.previews.address import AddressPolicy
from appliance.media.previews.cache import TtlCache
from appliance.media.previews.decode import decode_html
from appliance.media.previews.fetch import Fetcher, Page
from appliance.media.previews.parse import PageMeta, parse_head
from appliance.media.previews.resolve import Resolver, SystemResolver
from appliance.media.previews.url import PreviewUrl, parse_url
from appliance.ratelimit import UserRates

log = logging.getLogger(__name__)

#: Previews (and failures) kept, and the memory they may take in all: an entry is
#: bounded (URLs of at most 4 KiB, title 300 and description 1000 characters) but
#: 10,000 entries made as large as possible by hostile pages would be ~200 MB.
MAX_CACHE_ENTRIES = 10_000
MAX_CACHE_BYTES = 32 * 1024 * 1024
#: What an entry costs besides its strings (the tuple, the dataclass, the dict slot).
_ENTRY_OVERHEAD = 400
#: Users whose rate is tracked; the least recently active is forgotten first.
MAX_RATE_USERS = 10_000
#: Previews fetched at the same time by this process; more wait their turn.
MAX_CONCURRENT_FETCHES = 16
#: Previews of one app fetched or waiting for a turn at once; more are refused (429).
#: Each can hold a turn for two ``timeout_s``: without this, one app's users pointing at
#: pages that answer slowly took every turn, and every other app's previews waited.
MAX_APP_FETCHES = 4

#: ``store_image(app_id, path, content_type)``: thumbnails and stores the
#: downloaded image as a file of the app, returning its id (None if refused).
#: `path` is deleted once it returns: it copies or moves what it keeps.
StoreImage = Callable[[int, Path, str], Awaitable[str | None]]

_Key = tuple[int, str]
_Failure = tuple[type[PreviewRefusedError] | type[PreviewFetchError], str]


@dataclass(frozen=True, slots=True)
class Preview:
    """What a link shows; absent fields are None."""

    url: str  # the link, canonical (the cache key)
    canonical_url: str  # what the page calls itself, else where the link led
    title: str | None
    description: str | None
    site_name: str | None
    image_url: str | None  # where the image was fetched from
    image_file_id: str | None  # the app's file holding it (thumbnailed by store_image)


class PreviewService:
    """Link previews for the users of every app on this server."""

    def __init__(self, config: PreviewConfig, *, resolver: Resolver | None = None,
                 policy: AddressPolicy | None = None, store_image: StoreImage | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 ssl_context: ssl.SSLContext | None = None,
                 tmp_dir: Path | None = None) -> None:
        self.config = config
        #: The system resolver when none is given (its threads stop at `close`).
        self._own_resolver: SystemResolver | None = None
        if resolver is None:
            resolver = self._own_resolver = SystemResolver(config.timeout_s)
        self._fetcher = Fetcher(config, resolver=resolver,
                                policy=policy or AddressPolicy(config.allow),
                                ssl_context=ssl_context)
        self._store_image = store_image
        self._clock = clock
        self._tmp_dir = tmp_dir
        self._cache: TtlCache[_Key, Preview | _Failure] = TtlCache(
            MAX_CACHE_ENTRIES, clock, MAX_CACHE_BYTES)
        self._inflight: dict[_Key, asyncio.Task[Preview]] = {}
        #: Fetches under way or waiting for a turn, per app (`MAX_APP_FETCHES`).
        self._app_fetches: dict[int, int] = {}
        per_minute = config.per_user_per_minute
        self._buckets = UserRates(per_minute / 60.0, float(per_minute), MAX_RATE_USERS)
        self._fetches = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)

    async def preview(self, app_id: int, user_id: int, url: str) -> Preview:
        """The preview of `url` for a user of app `app_id`.

        Raises:
            PreviewRefusedError: the URL is not one the server fetches (422).
            PreviewFetchError: fetching it failed (502).
            TooManyRequestsError: the user is over ``per_user_per_minute`` misses (429).
        """
        if not self.config.enabled:
            raise PreviewRefusedError("link previews are turned off (media.previews.enabled)")
        parsed = parse_url(url)
        key = (app_id, str(parsed))
        cached = self._cache.get(key)
        if isinstance(cached, Preview):
            return cached
        if cached is not None:
            kind, reason = cached
            raise kind(reason)
        task = self._inflight.get(key)
        if task is None:
            self._take_turn(app_id)
            self._take(app_id, user_id)
            # Referenced by _inflight until done, its exception retrieved by _landed:
            # what transport.tasks.spawn gives, which media may not import.
            task = asyncio.get_running_loop().create_task(self._miss(key, app_id, parsed),
                                                          name="link preview")
            self._inflight[key] = task
            self._app_fetches[app_id] = self._app_fetches.get(app_id, 0) + 1
            task.add_done_callback(lambda done: self._landed(key, done))
        try:
            # Shielded: one waiter giving up (its client left) cancels nobody else's.
            return await asyncio.shield(task)
        except (PreviewRefusedError, PreviewFetchError) as exc:
            raise type(exc)(exc.reason) from None  # each waiter its own exception

    async def close(self) -> None:
        """Cancel the fetches under way and stop the lookup threads (server shutdown)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._own_resolver is not None:
            self._own_resolver.close()

    def _take(self, app_id: int, user_id: int) -> None:
        per_minute = self.config.per_user_per_minute
        if not self._buckets.take((app_id, user_id), self._clock()):
            # A token comes back every 60/per_minute s: the wait is at most that.
            raise TooManyRequestsError(
                f"at most {per_minute} new link previews a minute per user"
                " (media.previews.per_user_per_minute)",
                retry_after_s=60.0 / max(per_minute, 1))

    def _take_turn(self, app_id: int) -> None:
        if self._app_fetches.get(app_id, 0) >= MAX_APP_FETCHES:
            # A turn comes back when a fetch ends: within two timeout_s (page and image).
            raise TooManyRequestsError(
                f"this app has {MAX_APP_FETCHES} link previews being fetched; retry when"
                " one is done", retry_after_s=self.config.timeout_s)

    def _landed(self, key: _Key, task: asyncio.Task[Preview]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        app_id = key[0]
        left = self._app_fetches.pop(app_id) - 1
        if left:
            self._app_fetches[app_id] = left
        if not task.cancelled():
            task.exception()  # retrieved: a fetch nobody waits for any more logs nothing

    async def _miss(self, key: _Key, app_id: int, url: PreviewUrl) -> Preview:
        async with self._fetches:
            try:
                preview = await self._make(app_id, url)
            except (PreviewRefusedError, PreviewFetchError) as exc:
                self._cache.put(key, (type(exc), exc.reason), self.config.failure_ttl_s,
                                _cost(key[1], exc.reason))
                raise
        self._cache.put(key, preview, self.config.cache_ttl_s,
                        _cost(key[1], preview.url, preview.canonical_url, preview.title,
                              preview.description, preview.site_name, preview.image_url,
                              preview.image_file_id))
        return preview

    async def _make(self, app_id: int, url: PreviewUrl) -> Preview:
        page = await self._fetcher.page(url, app_id)
        # Decoding and tokenizing up to max_html_bytes is CPU work: off the loop.
        meta = await asyncio.to_thread(_read, page)
        if not page.complete and meta.title is None and meta.description is None \
                and meta.image_url is None:
            raise PreviewFetchError(f"no page head within {self.config.max_html_bytes} bytes"
                                    " (media.previews.max_html_bytes)")
        file_id = None
        if meta.image_url is not None and self._store_image is not None:
            file_id = await self._image(app_id, meta.image_url)
        return Preview(url=str(url), canonical_url=meta.canonical_url or str(page.url),
                       title=meta.title, description=meta.description, site_name=meta.site_name,
                       image_url=str(meta.image_url) if meta.image_url else None,
                       image_file_id=file_id)

    async def _image(self, app_id: int, url: PreviewUrl) -> str | None:
        """The image stored as a file of the app; None when it cannot be (the preview stays)."""
        assert self._store_image is not None
        try:
            fd, name = await asyncio.to_thread(_temporary, self._tmp_dir)
        except OSError as exc:  # the disk, not the page: the preview goes without its image
            log.warning("no room for a preview image in %s: %s", self._tmp_dir, exc.strerror)
            return None
        os.close(fd)
        path = Path(name)
        try:
            image = await self._fetcher.image(url, path, app_id)
            return await self._store_image(app_id, path, image.content_type)
        except (PreviewRefusedError, PreviewFetchError) as exc:
            log.info("preview image from %s not fetched: %s", url.host, exc.reason)
        except ApplianceError as exc:  # store_image refused it (not an image, a bomb...)
            log.info("preview image from %s not stored: %s", url.host, exc)
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return None


def _temporary(directory: str | Path | None) -> tuple[int, str]:
    """A private temporary file (its directory made first: the blob store makes it lazily)."""
    if directory is not None:
        Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix="preview-", dir=directory)


def _cost(*texts: str | None) -> int:
    """Bytes an entry holds, roughly: its strings as Python stores them, and the rest."""
    return _ENTRY_OVERHEAD + sum(sys.getsizeof(t) for t in texts if t is not None)


def _read(page: Page) -> PageMeta:
    return parse_head(decode_html(page.body, page.content_type), page.url)
