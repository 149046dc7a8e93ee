"""Renders `/metrics` and decides who may read it; the cost of a scrape is bounded.

* Time: a render takes ~0.5 ms (the `tidings_*` families, then
  prometheus-client's process, platform and GC collectors) and is reused for
  `RENDER_REUSE_S`.  Scrapes are served at most `SCRAPES_PER_S` a second,
  server-wide: more wait their turn (a timer, no work), and one that would
  wait over `MAX_SCRAPE_WAIT_S` is refused (429) after waiting that long, so
  that a client scraping back to back cannot turn quick refusals into a
  request flood.  A flood of authorized scrapes, from any number of
  connections, so costs at most `SCRAPES_PER_S` answers and one render a
  second, plus one 429 per connection (per HTTP/2 stream) every
  `MAX_SCRAPE_WAIT_S`; an unauthorized one is refused before this (401/403)
  and blocked by the edge like any failed authentication.  The stored queue is
  counted at most every `STORED_COUNT_INTERVAL_S`, on a connection and a
  thread of its own, and a scrape waits for it at most `COUNT_WAIT_S` (then
  answers without it).
* Size: every label set is bounded (see `collector`); a render is ~7 KiB.
* Access: the operator key, or a client address in ``[metrics] allow``
  (`appliance.metrics.config`); anything else is refused by the REST layer
  and counted here (`refused`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from appliance.edge.ipfilter import Address, CidrSet
from appliance.engine.clock import Clock
from appliance.errors import StorageError
from appliance.metrics.collector import (
    STORED_COUNT_INTERVAL_S,
    STORED_COUNT_LIMIT,
    Sources,
    TidingsCollector,
)

log = logging.getLogger(__name__)

#: A render is reused for this long (Prometheus scrapes every 15 s by default).
RENDER_REUSE_S = 1.0
#: The longest a scrape waits for the stored-queue count.
COUNT_WAIT_S = 2.0
#: Scrapes served per second, server-wide: a Prometheus server scrapes every 15 s,
#: so this leaves room for many, and for a person with curl.
SCRAPES_PER_S = 20.0
#: A scrape that would wait longer than this for its turn is refused, after this long.
MAX_SCRAPE_WAIT_S = 2.0


class Exporter:
    """`/metrics` for one server: `scrape()` renders, `allows()` checks an address."""

    #: The response's content type: the text exposition format.
    content_type = CONTENT_TYPE_LATEST.encode()

    def __init__(self, sources: Callable[[Exporter], Sources], clock: Clock,
                 count_deliveries: Callable[[int], Awaitable[int]], allow: CidrSet,
                 address_of: Callable[[Any], Address | None]) -> None:
        self._clock = clock
        self._count_deliveries = count_deliveries
        self._allow = allow
        self._address_of = address_of
        #: Scrapes refused (no or a wrong operator key, an address not allowed).
        self.refused = 0
        #: Scrapes refused because the line was full (`MAX_SCRAPE_WAIT_S`).
        self.too_many = 0
        self._next_turn = -math.inf
        self.count_errors = 0
        self._stored: int | None = None
        self._counted_at = -math.inf
        self._counting: asyncio.Task[None] | None = None
        self._body = b""
        self._rendered_at = -math.inf
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(TidingsCollector(sources(self)))
        ProcessCollector(registry=self._registry)
        PlatformCollector(registry=self._registry)
        GCCollector(registry=self._registry)

    def reconfigure(self, allow: CidrSet) -> None:
        """SIGHUP: a new ``[metrics] allow`` (checked by the configuration's loading),
        for the next scrape."""
        self._allow = allow

    @property
    def has_allowlist(self) -> bool:
        return len(self._allow) > 0

    def allows(self, connection: Any) -> bool:
        """Whether the client of `connection` (a transport) is in ``[metrics] allow``."""
        if not len(self._allow):
            return False
        address = self._address_of(connection)
        return address is not None and self._allow.contains(address)

    def stored(self) -> int | None:
        """The last stored-queue count (None: none yet, or the last one failed)."""
        return self._stored

    async def scrape(self) -> bytes | None:
        """The exposition text (reused for `RENDER_REUSE_S` after each render), once this
        scrape's turn comes; None, after `MAX_SCRAPE_WAIT_S`, when the line is longer."""
        now = self._clock.monotonic()
        turn = max(now, self._next_turn)
        if turn - now > MAX_SCRAPE_WAIT_S:
            self.too_many += 1
            await asyncio.sleep(MAX_SCRAPE_WAIT_S)  # refused slowly: no spinning on 429s
            return None
        self._next_turn = turn + 1 / SCRAPES_PER_S
        if turn > now:
            await asyncio.sleep(turn - now)
        if self._clock.monotonic() - self._rendered_at < RENDER_REUSE_S:
            return self._body
        await self._refresh_stored()
        self._body = generate_latest(self._registry)
        self._rendered_at = self._clock.monotonic()
        return self._body

    async def _refresh_stored(self) -> None:
        """Start a count when the last is `STORED_COUNT_INTERVAL_S` old; wait a bounded time."""
        counting = self._counting
        if counting is None and self._clock.monotonic() - self._counted_at \
                >= STORED_COUNT_INTERVAL_S:
            self._counted_at = self._clock.monotonic()
            counting = self._counting = asyncio.get_running_loop().create_task(
                self._count(), name="metrics-count")
        if counting is not None:
            # Not cancelled on timeout: it finishes in the background, and one
            # count at most runs at a time.
            await asyncio.wait({counting}, timeout=COUNT_WAIT_S)

    async def _count(self) -> None:
        try:
            self._stored = await self._count_deliveries(STORED_COUNT_LIMIT)
        except StorageError as exc:
            self.count_errors += 1
            self._stored = None
            log.warning("metrics: stored queue not counted: %s", exc)
        finally:
            self._counting = None
