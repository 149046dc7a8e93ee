"""Link previews (issue 15): what a URL shows, fetched safely.

* `url` — the strict parser: http(s) only, the host read as a browser reads it.
* `address` — `AddressPolicy`, the SSRF rule: which addresses may be reached.
* `resolve` — `Resolver` (injectable) and the system's, asked once per hop.
* `fetch` — `Fetcher`: connects only to checked addresses; redirects, time, size bounded.
* `decode` — bounded decompression, the page's character encoding.
* `parse` — OpenGraph, Twitter cards and plain HTML from the page's head.
* `cache` — `TtlCache`; `service` — `PreviewService`, cached, single-flight, rate-limited.
"""

from __future__ import annotations

from appliance.media.previews.address import AddressPolicy
from appliance.media.previews.resolve import Resolver, SystemResolver
from appliance.media.previews.service import Preview, PreviewService, StoreImage

__all__ = ["AddressPolicy", "Preview", "PreviewService", "Resolver", "StoreImage",
           "SystemResolver"]
