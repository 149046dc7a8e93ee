"""The `tidings_*` metric families, read from the running server at scrape time.

Nothing here runs on the message path: the engine, the transport and the
edge keep the integer counters they keep anyway (`appliance.engine.figures`
adds a list increment per message and one histogram observation per
group-commit batch), and this collector turns them into metric families when
a scrape asks.  Every label set is fixed or drawn from code-defined names
(statuses, refusal reasons, protocols), never from client data: the number
of series, hence a scrape's size, is bounded.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from appliance import __version__
from appliance.engine.core import Engine
from appliance.engine.figures import EngineFigures
from appliance.protocol.wire import Status

#: What the transport distinguishes (`appliance.transport.census`); "detecting":
#: accepted, protocol (or TLS handshake) not complete yet.
PROTOCOLS = ("native", "websocket", "http1", "http2", "detecting")
#: Status reports produced for senders (SPEC M3): the forward statuses after SENT.
REPORTED = (Status.DELIVERED, Status.READ, Status.EXPIRED)
#: Statuses a sender may be answered with: SENT, a duplicate's current status, or an error.
ANSWERED = tuple(s for s in Status if s != Status.OUTBOX)
_DAY_MS = 86_400_000
#: The stored queue is counted at most this often, and up to this many rows
#: (its time bound: 16 ms for a million rows on SQLite, cache warm); `exporter` does it.
STORED_COUNT_INTERVAL_S = 10.0
STORED_COUNT_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Certificate:
    """The served certificate: `serving` is acme, provided or self-signed."""

    serving: str
    #: Its notAfter (epoch ms); None when self-signed or unreadable.
    not_after_ms: int | None


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the figures come from; each callable is cheap and never awaits."""

    engine: Engine
    #: Open connections by (protocol, over TLS).
    connections: Callable[[], Mapping[tuple[str, bool], int]]
    #: Refusals by limit, every source together.
    refusals: Callable[[], Mapping[str, int]]
    certificate: Callable[[], Certificate]
    wall_ms: Callable[[], int]
    #: Delivery rows waiting in the store (None: not counted yet, or the count failed).
    stored: Callable[[], int | None]
    #: Failed store calls made for the metrics themselves (the queue count).
    count_errors: Callable[[], int]


def status_name(code: int) -> str:
    """A status code as a label value: its SPEC M3 name, else its hex code."""
    try:
        return Status(code).name.lower()
    except ValueError:
        return f"0x{code:02x}"


class TidingsCollector(Collector):
    """Collects every `tidings_*` family from `Sources` when scraped."""

    def __init__(self, sources: Sources) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        s = self._sources
        engine = s.engine
        figures = engine.figures
        info = GaugeMetricFamily("tidings_build_info", "The running build (value 1)",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield self._connections()
        yield GaugeMetricFamily("tidings_sessions", "Authenticated devices connected",
                                value=len(engine.registry))
        yield from _messages(figures)
        yield _commit_latency(figures)
        yield GaugeMetricFamily(
            "tidings_queue_uncommitted_messages",
            "Messages accepted and waiting for their group commit", value=engine.uncommitted)
        stored = s.stored()
        if stored is not None:
            yield GaugeMetricFamily(
                "tidings_queue_stored_deliveries",
                "Stored messages not yet delivered, one per recipient device (counted at most"
                f" every {STORED_COUNT_INTERVAL_S:.0f} s, up to {STORED_COUNT_LIMIT})",
                value=stored)
        errors = CounterMetricFamily("tidings_store_errors", "Failed store calls, by operation",
                                     labels=["operation"])
        errors.add_metric(["commit"], engine.stats_failed_batches)
        for operation in ("read", "sweep"):
            errors.add_metric([operation], figures.store_errors[operation])
        errors.add_metric(["count"], s.count_errors())
        yield errors
        yield from self._certificate()
        refusals = CounterMetricFamily("tidings_refusals", "Requests, messages and connections"
                                       " refused, by the limit that refused them",
                                       labels=["limit"])
        for limit, count in sorted(s.refusals().items()):
            refusals.add_metric([limit], count)
        yield refusals

    def _connections(self) -> Metric:
        counts = self._sources.connections()
        family = GaugeMetricFamily("tidings_connections", "Open connections on the main port,"
                                   " by protocol and TLS", labels=["protocol", "tls"])
        for protocol, tls in itertools.product(PROTOCOLS, (False, True)):
            family.add_metric([protocol, "true" if tls else "false"],
                              counts.get((protocol, tls), 0))
        return family

    def _certificate(self) -> Iterator[Metric]:
        cert = self._sources.certificate()
        yield GaugeMetricFamily("tidings_certificate_self_signed",
                                "1 while the self-signed certificate is served",
                                value=1 if cert.serving == "self-signed" else 0)
        if cert.not_after_ms is None:
            return  # self-signed (or unreadable): no expiry to alert on
        days = GaugeMetricFamily("tidings_certificate_days_left",
                                 "Days until the served certificate expires (absent while"
                                 " self-signed)", labels=["serving"])
        days.add_metric([cert.serving], (cert.not_after_ms - self._sources.wall_ms()) / _DAY_MS)
        yield days


def _messages(figures: EngineFigures) -> Iterator[Metric]:
    accepted = CounterMetricFamily(
        "tidings_messages_accepted", "Messages submitted (native, WebSocket, REST), by the"
        " status answered to the sender: sent, a resent duplicate's current status, or the"
        " refusal", labels=["status"])
    answered = figures.answered
    for code in sorted({int(s) for s in ANSWERED} | {c for c, n in enumerate(answered) if n}):
        accepted.add_metric([status_name(code)], answered[code])
    yield accepted
    delivered = CounterMetricFamily(
        "tidings_messages_delivered", "Status reports produced for senders (messages with"
        " receipts on, the default): delivered to a device, read, expired undelivered",
        labels=["status"])
    for status in REPORTED:
        delivered.add_metric([status.name.lower()], figures.reported[status])
    yield delivered


def _commit_latency(figures: EngineFigures) -> Metric:
    histogram = figures.commit_seconds
    cumulative = list(itertools.accumulate(histogram.counts))
    # repr is what prometheus-client writes for these bounds ("0.0005", "1.0").
    bounds = [*(repr(b) for b in histogram.bounds), "+Inf"]
    family = HistogramMetricFamily("tidings_commit_duration_seconds",
                                   "Group commit latency, one observation per batch")
    family.add_metric([], list(zip(bounds, cumulative, strict=True)), histogram.sum)
    return family
