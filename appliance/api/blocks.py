"""Blocking over REST (issue 16): a user blocks another, with its access token or by its app.

A block is one way: the blocker gets nothing more from the blocked user (a
1:1 message is answered BLOCKED, a group message skips the blocker, no
typing), and the blocked user sees nothing of the blocker's presence (it
reads as an unknown address).  Both users are of one app: addresses resolve
in the caller's app only.  ``PUT`` and ``DELETE`` are idempotent (204
whether or not anything changed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from appliance.api.http import ApiError, ApiResponse, ok
from appliance.api.inputs import checked
from appliance.api.presence import app_of, changed, user_id
from appliance.protocol.wire.constants import MAX_ADDRESS_BYTES
from appliance.service.admin import check_address
from appliance.storage.models import MAX_BLOCKS

if TYPE_CHECKING:
    from appliance.api.v1 import Call


async def _list(call: Call, user: int) -> ApiResponse:
    found = await call.api.store.blocks(app_of(call), user)
    return ok(200, {"blocks": [a.decode("utf-8", "replace") for a in found]})


async def _set(call: Call, user: int, address: str, blocked: bool) -> ApiResponse:
    other = checked(check_address, address, "address").encode()
    if other == await _address_of(call, user):
        raise ApiError(422, "invalid request", "a user cannot block itself", field="address")
    if await call.api.store.set_block(app_of(call), user, other, blocked,
                                      call.api.clock.wall_ms()):
        await changed(call, user)
    return ApiResponse(204)


async def _address_of(call: Call, user: int) -> bytes:
    if call.user is not None and call.user.user_id == user:
        return call.user.address
    return await call.api.store.user_address(user) or b""


async def list_own_blocks(call: Call) -> ApiResponse:
    assert call.user is not None
    return await _list(call, call.user.user_id)


async def block_own(call: Call) -> ApiResponse:
    assert call.user is not None
    return await _set(call, call.user.user_id, call.params["address"], True)


async def unblock_own(call: Call) -> ApiResponse:
    assert call.user is not None
    return await _set(call, call.user.user_id, call.params["address"], False)


async def list_user_blocks(call: Call) -> ApiResponse:
    return await _list(call, await user_id(call, call.params["address"]))


async def block_for_user(call: Call) -> ApiResponse:
    user = await user_id(call, call.params["address"])
    return await _set(call, user, call.params["blocked"], True)


async def unblock_for_user(call: Call) -> ApiResponse:
    user = await user_id(call, call.params["address"])
    return await _set(call, user, call.params["blocked"], False)


_BLOCKS = {"type": "object", "required": ["blocks"], "properties": {
    "blocks": {"type": "array", "maxItems": MAX_BLOCKS, "items": {
        "type": "string", "minLength": 1, "maxLength": MAX_ADDRESS_BYTES}}}}
_CONFLICT = (f"; 409 when the user already blocks {MAX_BLOCKS} users, 404 when the address"
             " names no user of the app")

#: Registered in `appliance.api.v1.ROUTES` (as `Route(**spec)`).
BLOCK_ROUTES: list[dict[str, Any]] = [
    {"method": "GET", "pattern": "/v1/blocks", "handler": list_own_blocks, "user": True,
     "summary": "The users I block (access token)", "response": _BLOCKS},
    {"method": "PUT", "pattern": "/v1/blocks/{address}", "handler": block_own, "user": True,
     "status": 204, "summary": "Block a user (access token)" + _CONFLICT},
    {"method": "DELETE", "pattern": "/v1/blocks/{address}", "handler": unblock_own,
     "user": True, "status": 204, "summary": "Unblock a user (access token)"},
    {"method": "GET", "pattern": "/v1/users/{address}/blocks", "handler": list_user_blocks,
     "summary": "The users a user blocks", "response": _BLOCKS},
    {"method": "PUT", "pattern": "/v1/users/{address}/blocks/{blocked}",
     "handler": block_for_user, "status": 204,
     "summary": "Make a user block another" + _CONFLICT},
    {"method": "DELETE", "pattern": "/v1/users/{address}/blocks/{blocked}",
     "handler": unblock_for_user, "status": 204, "summary": "Make a user unblock another"},
]
