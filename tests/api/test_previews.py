"""``GET /v1/previews``: the handler's answers (the route is wired into the REST API by the
lead; here the handler gets a real PreviewService and a real local web server)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any, cast

from appliance.api.http import ApiRequest, ApiResponse, from_error
from appliance.api.previews import PREVIEW_ROUTES, get_preview
from appliance.errors import ApplianceError
from appliance.media.previews.service import PreviewService
from appliance.storage.models import Principal
from tests.media.previews.support import FakeResolver, config, public_loopback_policy
from tests.media.previews.webserver import WebServer, page, raw, response

USER = Principal(app_id=3, user_id=9, address=b"ann", token_expires_ms=0)


def call(service: PreviewService | None, query: dict[str, str]) -> Any:
    request = ApiRequest("GET", "/v1/previews", query, {}, b"")
    return cast(Any, SimpleNamespace(request=request, params={}, app=None, user=USER,
                                     api=SimpleNamespace(previews=service, files=Links())))


class Links:
    """The files service's signed links (FileService.link_to), as the handler uses them."""

    async def link_to(self, file_id: str, ttl_s: int | None = None) -> tuple[str, int]:
        return f"exp=99&sig=for-{file_id[:4]}", 99


async def answer(service: PreviewService | None, query: dict[str, str]) -> ApiResponse:
    """What the REST API would send: the handler's answer, or its error's problem+json."""
    try:
        return await get_preview(call(service, query))
    except ApplianceError as exc:
        return from_error(exc)


def test_the_route_spec() -> None:
    (spec,) = PREVIEW_ROUTES
    assert (spec["method"], spec["pattern"], spec["user"], spec["query"]) == (
        "GET", "/v1/previews", True, ("url",))


def test_a_preview_and_each_refusal() -> None:
    stored: list[int] = []

    async def store(app_id: int, path: object, content_type: str) -> str:
        stored.append(app_id)
        return "b" * 26

    async def go() -> None:
        html = '<title>Hello</title><meta property="og:image" content="/i.png">'
        async with WebServer({"/": page(html), "/slow": page("x"),
                              "/i.png": raw(response(200, b"img", {"Content-Type": "image/png"}))
                              }) as server:
            service = PreviewService(config(server.port, per_user_per_minute=3),
                                     resolver=FakeResolver(), policy=public_loopback_policy(),
                                     store_image=store)
            ok = await answer(service, {"url": server.url()})
            assert ok.status == 200
            assert json.loads(ok.body) == {
                "url": server.url(), "canonical_url": server.url(), "title": "Hello",
                "description": None, "site_name": None,
                "image": {"id": "b" * 26, "url": f"/v1/files/{'b' * 26}?exp=99&sig=for-bbbb",
                          "expires_at": 99}}
            assert stored == [USER.app_id]
            refused = await answer(service, {"url": "http://127.0.0.2/"})  # a miss: counted
            assert refused.status == 422
            assert json.loads(refused.body)["field"] == "url"
            assert "loopback" in json.loads(refused.body)["detail"]
            failed = await answer(service, {"url": server.url("/gone")})
            assert failed.status == 502
            assert "HTTP 404" in json.loads(failed.body)["detail"]
            limited = await answer(service, {"url": server.url("/slow")})
            assert limited.status == 429
            assert (b"retry-after", b"20") in limited.headers
            assert (await answer(service, {})).status == 422
            assert (await answer(None, {"url": server.url()})).status == 404
    asyncio.run(go())
