"""``GET /v1/previews?url=``: a link's preview, for a user (issue 15).

The user's access token authenticates (the route is ``user=True``); the
preview's image is a file of the user's app, owned by no user: ``image.url``
is a signed link to it (``/v1/files/{id}?exp=&sig=``), made for each answer.  The work is
`appliance.media.previews.PreviewService`, reached as ``call.api.previews``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from appliance.api.http import ApiError, ApiResponse, ok
from appliance.errors import PreviewRefusedError
from appliance.media.previews.service import Preview

if TYPE_CHECKING:
    from appliance.api.v1 import Call


class PreviewSource(Protocol):
    """What the route needs of `PreviewService`."""

    async def preview(self, app_id: int, user_id: int, url: str) -> Preview: ...


def preview_doc(preview: Preview, image_link: tuple[str, int] | None = None) -> dict[str, Any]:
    """The JSON body of a preview; `image_link` is a signed link's (query, expiry)."""
    image: dict[str, Any] | None = None
    if preview.image_file_id is not None:
        image = {"id": preview.image_file_id}
        if image_link is not None:
            image["url"] = f"/v1/files/{preview.image_file_id}?{image_link[0]}"
            image["expires_at"] = image_link[1]
    return {"url": preview.url, "canonical_url": preview.canonical_url,
            "title": preview.title, "description": preview.description,
            "site_name": preview.site_name, "image": image}


async def get_preview(call: Call) -> ApiResponse:
    service: PreviewSource | None = call.api.previews
    if service is None:
        raise ApiError(404, "not found", "link previews are turned off on this server")
    assert call.user is not None  # a user=True route
    url = call.request.query.get("url", "")
    if not url:
        raise ApiError(422, "invalid request", "'url' is required", field="url")
    try:
        preview = await service.preview(call.user.app_id, call.user.user_id, url)
    except PreviewRefusedError as exc:
        raise ApiError(422, "invalid request", exc.reason, field="url") from None
    # TooManyRequestsError (429, Retry-After) and PreviewFetchError (502) leave through
    # the one error table, `appliance.api.http.PROBLEMS`.
    link = None
    if preview.image_file_id is not None and call.api.files is not None:
        # The image file belongs to no user (many share a preview): a signed link reads it,
        # made now (the preview may come from the cache).
        link = await call.api.files.link_to(preview.image_file_id)
    return ok(200, preview_doc(preview, link))


_NULLABLE = {"type": ["string", "null"]}

#: Registered in `appliance.api.v1.ROUTES` (as `Route(**spec)`).
PREVIEW_ROUTES: list[dict[str, Any]] = [
    {"method": "GET", "pattern": "/v1/previews", "handler": get_preview, "user": True,
     "summary": "A link's preview (title, description, site, image) fetched by the server;"
                " cached, rate-limited per user (access token)",
     "query": ("url",),
     "response": {"type": "object", "properties": {
         "url": {"type": "string"}, "canonical_url": {"type": "string"},
         "title": _NULLABLE, "description": _NULLABLE, "site_name": _NULLABLE,
         "image": {"type": ["object", "null"], "properties": {
             "id": {"type": "string"},
             "url": {"type": "string", "description": "a signed link (media.link_ttl_s)"},
             "expires_at": {"type": "integer"}}}}}},
]
