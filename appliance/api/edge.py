"""Operator routes of the edge: its counters and the IP filter's lists (SPEC M13).

All need the operator key.  The lists edited here are the filter files
(`appliance.edge.files`), the same the `tidings ipfilter` command edits; each
change reloads the running filter at once, closing connections from addresses
it now refuses.  CIDRs in the config file (``edge.allow``/``edge.block``) are
shown by the server's counters but changed only there.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from appliance.api.http import ApiError, ApiResponse, ok
from appliance.edge.config import EdgeConfig
from appliance.edge.files import LISTS, FilterFiles
from appliance.errors import UsageError

if TYPE_CHECKING:
    from appliance.api.v1 import Call

#: CIDRs one request may add or remove, and one page may list.
MAX_CIDRS_PER_CALL = 10_000
MAX_PAGE = 10_000


class EdgeControl(Protocol):
    """What these routes need of the running edge (`appliance.transport.acceptor.Edge`)."""

    files: FilterFiles
    config: EdgeConfig

    def snapshot(self) -> dict[str, int]: ...

    async def reload(self, config: EdgeConfig) -> None: ...


def _edge(call: Call) -> EdgeControl:
    edge = call.api.edge
    if edge is None:
        raise ApiError(503, "no edge", "this server has no connection edge")
    return edge


def _list(call: Call) -> str:
    name = call.params["list"]
    if name not in LISTS:
        raise ApiError(404, "not found", f"no list {name!r}: allow or block")
    return name


async def edge_stats(call: Call) -> ApiResponse:
    return ok(200, _edge(call).snapshot())


async def list_cidrs(call: Call) -> ApiResponse:
    edge, name = _edge(call), _list(call)
    query = call.request.query
    limit = query.get("limit", "1000")
    if not limit.isascii() or not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE:
        raise ApiError(422, "invalid request", f"limit must be 1..{MAX_PAGE}", field="limit")
    after = query.get("after", "")
    loop = asyncio.get_running_loop()
    try:
        networks = await loop.run_in_executor(None, edge.files.read, name)
    except UsageError as exc:
        raise ApiError(500, "unreadable filter file", str(exc)) from None
    texts = [str(n) for n in networks]
    start = texts.index(after) + 1 if after in texts else 0
    page = texts[start:start + int(limit)]
    more = start + len(page) < len(texts)
    return ok(200, {"cidrs": page, "next": page[-1] if more and page else None})


async def change_cidrs(call: Call) -> ApiResponse:
    edge, name = _edge(call), _list(call)
    doc = call.json()
    changes: dict[str, list[str]] = {}
    for key in ("add", "remove"):
        value: Any = doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ApiError(422, "invalid request", f"{key!r} must be a list of CIDRs", field=key)
        if len(value) > MAX_CIDRS_PER_CALL:
            raise ApiError(422, "invalid request",
                           f"at most {MAX_CIDRS_PER_CALL} CIDRs per request", field=key)
        changes[key] = value
    loop = asyncio.get_running_loop()
    try:
        added, removed = await loop.run_in_executor(
            None, lambda: edge.files.change(name, changes["add"], changes["remove"]))
    except UsageError as exc:
        raise ApiError(422, "invalid request", str(exc)) from None
    await edge.reload(edge.config)  # effective now, not at the next sweep
    return ok(200, {"added": added, "removed": removed})


_CIDRS = {"type": "array", "items": {"type": "string"}, "maxItems": MAX_CIDRS_PER_CALL}

#: Registered in `appliance.api.v1.ROUTES` (as `Route(**spec)`).
EDGE_ROUTES: list[dict[str, Any]] = [
    {"method": "GET", "pattern": "/v1/edge", "handler": edge_stats, "operator": True,
     "summary": "Connection edge counters: refusals by reason, auto-blocks (operator key)",
     "response": {"type": "object", "additionalProperties": {"type": "integer"}}},
    {"method": "GET", "pattern": "/v1/ipfilter/{list}", "handler": list_cidrs, "operator": True,
     "summary": "The CIDRs of the allow or block file, paged (operator key)",
     "query": ("after", "limit"),
     "response": {"type": "object", "properties": {"cidrs": _CIDRS,
                                                   "next": {"type": ["string", "null"]}}}},
    {"method": "POST", "pattern": "/v1/ipfilter/{list}", "handler": change_cidrs,
     "operator": True,
     "summary": "Add and remove CIDRs of the allow or block list; effective at once"
                " (operator key)",
     "body": {"type": "object", "properties": {"add": _CIDRS, "remove": _CIDRS}},
     "response": {"type": "object", "properties": {"added": {"type": "integer"},
                                                   "removed": {"type": "integer"}}}},
]
