"""``GET /metrics``: the Prometheus text exposition, for the operator key or an allowed address.

The route is declared like every other (`METRICS_ROUTES`, in `v1.ROUTES`)
and served by both HTTP/1.1 and HTTP/2.  Who may read it is decided in
`RestApi._authenticate_scraper`: an address in ``[metrics] allow`` needs no
credential; anyone else needs ``Authorization: Bearer <operator key>``.  A
refusal is problem+json (401 with a wrong or missing key, 403 from an
address outside a configured allowlist with no key), counts against the
address like any failed authentication (the edge blocks repeat offenders)
and is counted in ``tidings_refusals_total{limit="metrics_unauthorized"}``.
Authorized scrapes are paced server-wide (`appliance.metrics.exporter`); one
past the line is a 429, counted as ``limit="metrics_rate"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from appliance.api.http import ApiError, ApiResponse

if TYPE_CHECKING:
    from appliance.api.v1 import Call


class MetricsAccess(Protocol):
    """What the route needs of the exporter (`appliance.metrics.exporter.Exporter`)."""

    refused: int
    #: prometheus-client's CONTENT_TYPE_LATEST (this layer does not import it).
    content_type: bytes

    @property
    def has_allowlist(self) -> bool: ...

    def allows(self, connection: Any) -> bool: ...

    async def scrape(self) -> bytes | None:
        """The exposition; None when too many scrapes wait already."""
        ...


async def metrics(call: Call) -> ApiResponse:
    exporter = call.api.metrics
    if exporter is None:
        raise ApiError(404, "not found", "no metrics on this server")
    body = await exporter.scrape()
    if body is None:
        raise ApiError(429, "too many requests", "too many scrapes are waiting; retry later")
    return ApiResponse(200, body, exporter.content_type)


#: Registered in `appliance.api.v1.ROUTES` (as `Route(**spec)`).
METRICS_ROUTES: list[dict[str, Any]] = [
    {"method": "GET", "pattern": "/metrics", "handler": metrics, "operator": True,
     "scrape": True,
     "summary": "Prometheus metrics, text exposition format (operator key, or a client"
                " address in [metrics] allow)"},
]
