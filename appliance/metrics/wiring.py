"""The `Exporter` of a running server: which counters feed which metric.

The one place that knows the server's parts (`app.serve` calls
`exporter_for` once): the engine's figures, the transport's and the edge's
refusals, the open connections (`appliance.transport.census`), the served
certificate (the certificate manager's, else the configured file, else the
self-signed one) and the store's queue count.
"""

from __future__ import annotations

from collections.abc import Mapping

from appliance.certs.expiry import ExpiryCache
from appliance.certs.manager import CertificateManager
from appliance.metrics.collector import Certificate, Sources
from appliance.metrics.config import MetricsConfig, allowed_networks
from appliance.metrics.exporter import Exporter
from appliance.storage.interface import Storage
from appliance.transport import census
from appliance.transport.server import Server
from appliance.transport.tls import TlsContexts

#: Edge counters that are refusals (the others are gauges and limits: see /v1/edge).
_EDGE_REFUSALS = ("auto_blocks", "evicted_handshakes")


def edge_refusals(snapshot: Mapping[str, int]) -> dict[str, int]:
    """The edge's refusal counters as ``edge_<limit>`` (``refused_per_ip`` -> ``edge_per_ip``)."""
    return {"edge_" + name.removeprefix("refused_"): count for name, count in snapshot.items()
            if name.startswith("refused_") or name in _EDGE_REFUSALS}


def exporter_for(config: MetricsConfig, server: Server, store: Storage, tls: TlsContexts | None,
                 certs: CertificateManager | None) -> Exporter:
    """The `/metrics` exporter of `server`."""
    engine = server.engine
    expiry = ExpiryCache()

    def certificate() -> Certificate:
        if certs is not None and certs.serving == "acme" and certs.current is not None:
            return Certificate("acme", certs.current.not_after_ms)
        if tls is None or tls.self_signed:
            return Certificate("self-signed", None)
        return Certificate("provided", expiry.not_after_ms(tls.cert))

    def sources(exporter: Exporter) -> Sources:
        def refusals() -> dict[str, int]:
            return {**engine.refusals, **server.refusals,
                    **edge_refusals(server.edge.snapshot()),
                    "metrics_unauthorized": exporter.refused,
                    "metrics_rate": exporter.too_many}

        return Sources(engine, lambda: census.by_protocol(server.edge.gates), refusals,
                       certificate, engine.clock.wall_ms, exporter.stored,
                       lambda: exporter.count_errors)

    return Exporter(sources, engine.clock, store.count_deliveries, allowed_networks(config),
                    census.client_address)
