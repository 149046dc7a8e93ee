"""Profile and group pictures (issue 15): square crops in ``media.picture_sizes``.

A user sets their own picture with their access token; a group's picture is
set by a member with the *admin* permission.  Any user of the same app reads
a user's picture; a group's picture is read by its members.  The uploaded
image is cleaned like every image (orientation, no metadata); the sizes are
made on first request and kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from appliance.api.files import declared_length, file_doc, files, variant_response
from appliance.api.http import ApiResponse, ok
from appliance.api.inputs import decimal
from appliance.errors import ForbiddenError, NotFoundError, UsageError
from appliance.media.content import is_image
from appliance.protocol.wire import STORED_U64_MAX
from appliance.storage.models import Perm, Principal

if TYPE_CHECKING:
    from appliance.api.v1 import Call

USER, GROUP = "user", "group"


async def _group_member(call: Call, user: Principal, *, admin: bool) -> int:
    group_id = decimal(call.params["id"], STORED_U64_MAX)
    members = (await call.api.store.group_members(user.app_id, group_id)
               if group_id is not None else None)
    if members is None:
        raise NotFoundError(f"no group {call.params['id'][:40]}")
    me = next((m for m in members if m.user_id == user.user_id), None)
    if me is None or (admin and not me.perms & Perm.ADMIN):
        raise ForbiddenError("only a group admin may change its picture" if admin
                             else "only members see a group's picture")
    assert group_id is not None
    return group_id


async def _store_picture(call: Call, kind: str, owner_id: int) -> ApiResponse:
    service = files(call)
    user = call.user
    assert user is not None
    assert call.request.stream is not None
    record = await service.create(
        user, declared_length(call),
        call.request.headers.get(b"content-type", b"").decode("latin-1"), f"{kind}-picture")
    record = await service.receive_whole(record, call.request.stream)
    if not is_image(record):
        await service.store.delete_file(record.file_id)
        raise UsageError("a picture must be a JPEG, PNG, WebP or GIF image")
    await service.store.set_picture(user.app_id, kind, owner_id, record.file_id)
    return ok(200, file_doc(record))


async def _picture(call: Call, kind: str, owner_id: int) -> ApiResponse:
    service = files(call)
    assert call.user is not None
    file_id = await service.store.picture(call.user.app_id, kind, owner_id)
    record = await service.store.file(file_id) if file_id else None
    if record is None:
        raise NotFoundError(f"no {kind} picture")
    query = call.request.query
    size_text = query.get("size", str(service.config.picture_sizes[0]))
    if not (size_text.isascii() and size_text.isdigit() and len(size_text) <= 5):
        raise UsageError("size must be one of the configured picture sizes")
    variant = await service.variant(record, int(size_text), query.get("format", "jpeg"),
                                    square=True)
    return variant_response(call, service, variant, f"{kind}-picture")


async def put_own(call: Call) -> ApiResponse:
    assert call.user is not None
    return await _store_picture(call, USER, call.user.user_id)


async def delete_own(call: Call) -> ApiResponse:
    assert call.user is not None
    await files(call).store.set_picture(call.user.app_id, USER, call.user.user_id, None)
    return ApiResponse(204)


async def get_user_picture(call: Call) -> ApiResponse:
    assert call.user is not None
    user_id = await call.api.store.find_user(call.user.app_id,
                                             call.params["address"].encode("utf-8"))
    if user_id is None:
        raise NotFoundError(f"no user {call.params['address'][:64]!r}")
    return await _picture(call, USER, user_id)


async def put_group_picture(call: Call) -> ApiResponse:
    assert call.user is not None
    return await _store_picture(call, GROUP, await _group_member(call, call.user, admin=True))


async def get_group_picture(call: Call) -> ApiResponse:
    assert call.user is not None
    return await _picture(call, GROUP, await _group_member(call, call.user, admin=False))


_IMAGE_QUERY = ("size", "format")
#: Registered in `appliance.api.v1.ROUTES` (as `Route(**spec)`).
PICTURE_ROUTES: list[dict[str, Any]] = [
    {"method": "PUT", "pattern": "/v1/profile/picture", "handler": put_own, "user": True,
     "stream": True, "summary": "Set your own picture (an image; access token)"},
    {"method": "DELETE", "pattern": "/v1/profile/picture", "handler": delete_own,
     "user": True, "status": 204, "summary": "Remove your own picture"},
    {"method": "GET", "pattern": "/v1/users/{address}/picture", "handler": get_user_picture,
     "user": True, "query": _IMAGE_QUERY,
     "summary": "A user's picture, square (media.picture_sizes; jpeg or webp)"},
    {"method": "PUT", "pattern": "/v1/groups/{id}/picture", "handler": put_group_picture,
     "user": True, "stream": True,
     "summary": "Set a group's picture (a member with the admin permission)"},
    {"method": "GET", "pattern": "/v1/groups/{id}/picture", "handler": get_group_picture,
     "user": True, "query": _IMAGE_QUERY, "summary": "A group's picture (members)"},
]
