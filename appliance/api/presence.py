"""Presence over REST (SPEC M6): a user's presence, its privacy, its contacts.

``GET /v1/users/{address}/presence`` takes the app secret (the app sees all
of its users) or a user's access token (told apart by the prefix): then the
answer is what that user may see, by the same rule as PRESENCE frames
(privacy, contacts, blocks; PROTOCOL.md §8.2): a user hidden from it reads
exactly as an address that names nobody (``unknown``, and 200 either way).

The app declares a user's contacts and sets its privacy; the user may set
its own privacy with its access token (``/v1/privacy``).  A change reaches
this process's watchers before the call returns (`PresenceView.users_changed`)
and every other process's within ``limits.credentials_poll_s`` (the store's
change log).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Protocol

from appliance.api.http import ApiError, ApiResponse, ok
from appliance.api.inputs import checked
from appliance.errors import StorageError
from appliance.protocol.wire.constants import MAX_ADDRESS_BYTES
from appliance.protocol.wire.presence import PresenceEntry, PresenceState
from appliance.service.admin import check_address
from appliance.storage.models import MAX_CONTACTS, Privacy

if TYPE_CHECKING:
    from appliance.api.v1 import Call

_STATES = {PresenceState.UNKNOWN: "unknown", PresenceState.OFFLINE: "offline",
           PresenceState.ONLINE: "online"}
_PRIVACY = {p.name.lower(): p for p in Privacy}


class PresenceView(Protocol):
    """What the routes need of the engine's presence part (`Presence`)."""

    async def lookup(self, app_id: int, viewer_id: int | None, address: bytes
                     ) -> PresenceEntry: ...

    async def users_changed(self, user_ids: Collection[int]) -> None: ...


async def user_id(call: Call, address: str) -> int:
    """The id of the user at `address` in the caller's app.

    Raises:
        ApiError: 422 for a malformed address, 404 for no such user.
    """
    found = await call.api.store.find_user(app_of(call), checked(check_address, address,
                                                                 "address").encode())
    if found is None:
        raise ApiError(404, "not found", f"no user {address[:64]!r}")
    return found


def app_of(call: Call) -> int:
    """The app the caller acts in (by its secret, or its user's token)."""
    if call.user is not None:
        return call.user.app_id
    assert call.app is not None
    return call.app.app_id


async def changed(call: Call, user: int) -> None:
    """Tell this process's watchers now (the change log tells the others)."""
    view: PresenceView | None = call.api.presence
    if view is None:
        return
    with contextlib.suppress(StorageError):  # committed anyway: the log's next poll re-checks
        await view.users_changed((user,))


def presence_doc(entry: PresenceEntry) -> dict[str, Any]:
    state = _STATES.get(PresenceState(entry.state), "online")
    return {"address": entry.address.decode("utf-8", "replace"), "state": state,
            "last_seen_ms": entry.last_seen_ms or None if state == "offline" else None,
            "activity": entry.activity.decode() if entry.activity else None}


async def get_presence(call: Call) -> ApiResponse:
    address = checked(check_address, call.params["address"], "address").encode()
    view: PresenceView | None = call.api.presence
    if view is None:
        raise ApiError(404, "not found", "presence is not served by this API")
    viewer = call.user.user_id if call.user is not None else None
    return ok(200, presence_doc(await view.lookup(app_of(call), viewer, address)))


def _privacy_doc(value: Privacy) -> dict[str, str]:
    return {"presence": value.name.lower()}


def _privacy_in(call: Call) -> Privacy:
    value = call.json().get("presence")
    if not isinstance(value, str) or value not in _PRIVACY:
        raise ApiError(422, "invalid request", "'presence' must be everyone, contacts or"
                       " nobody", field="presence")
    return _PRIVACY[value]


async def _set_privacy(call: Call, user: int) -> ApiResponse:
    value = _privacy_in(call)
    await call.api.store.set_privacy(app_of(call), user, value)
    await changed(call, user)
    return ok(200, _privacy_doc(value))


async def get_user_privacy(call: Call) -> ApiResponse:
    user = await user_id(call, call.params["address"])
    return ok(200, _privacy_doc(await call.api.store.privacy(app_of(call), user)))


async def put_user_privacy(call: Call) -> ApiResponse:
    return await _set_privacy(call, await user_id(call, call.params["address"]))


async def get_own_privacy(call: Call) -> ApiResponse:
    assert call.user is not None
    return ok(200, _privacy_doc(await call.api.store.privacy(call.user.app_id,
                                                             call.user.user_id)))


async def put_own_privacy(call: Call) -> ApiResponse:
    assert call.user is not None
    return await _set_privacy(call, call.user.user_id)


def _addresses(value: Any, name: str, most: int) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ApiError(422, "invalid request", f"'{name}' must be a list of addresses",
                       field=name)
    if len(value) > most:
        raise ApiError(422, "invalid request", f"'{name}' lists at most {most} addresses",
                       field=name)
    return [checked(check_address, a, name).encode() for a in value]


async def get_contacts(call: Call) -> ApiResponse:
    user = await user_id(call, call.params["address"])
    found = await call.api.store.contacts(app_of(call), user)
    return ok(200, {"contacts": [a.decode("utf-8", "replace") for a in found]})


async def put_contacts(call: Call) -> ApiResponse:
    user = await user_id(call, call.params["address"])
    wanted = _addresses(call.json().get("contacts"), "contacts", MAX_CONTACTS)
    unknown = await call.api.store.set_contacts(app_of(call), user, wanted)
    await changed(call, user)
    found = await call.api.store.contacts(app_of(call), user)
    return ok(200, {"contacts": [a.decode() for a in found],
                    "unknown": [a.decode() for a in unknown]})


_ADDRESS = {"type": "string", "minLength": 1, "maxLength": MAX_ADDRESS_BYTES}
_PRESENCE = {"type": "object", "required": ["address", "state"], "properties": {
    "address": _ADDRESS,
    "state": {"type": "string", "enum": ["online", "offline", "unknown"],
              "description": "unknown: no such user, or one hidden from the caller"},
    "last_seen_ms": {"type": ["integer", "null"],
                     "description": "offline: when its last device left, to the minute"},
    "activity": {"type": ["string", "null"]}}}
_PRIVACY_DOC = {"type": "object", "required": ["presence"], "properties": {
    "presence": {"type": "string", "enum": list(_PRIVACY)}}}
_CONTACTS = {"type": "object", "properties": {
    "contacts": {"type": "array", "items": _ADDRESS, "maxItems": MAX_CONTACTS},
    "unknown": {"type": "array", "items": _ADDRESS}}}

#: Registered in `appliance.api.v1.ROUTES` (as `Route(**spec)`).
PRESENCE_ROUTES: list[dict[str, Any]] = [
    {"method": "GET", "pattern": "/v1/users/{address}/presence", "handler": get_presence,
     "either": True, "response": _PRESENCE,
     "summary": "A user's presence: with the app secret, as it is; with a user's access"
                " token, as that user may see it (privacy, contacts, blocks)"},
    {"method": "GET", "pattern": "/v1/users/{address}/privacy", "handler": get_user_privacy,
     "summary": "Who may see a user's presence", "response": _PRIVACY_DOC},
    {"method": "PUT", "pattern": "/v1/users/{address}/privacy", "handler": put_user_privacy,
     "summary": "Set who may see a user's presence: everyone, contacts or nobody",
     "body": _PRIVACY_DOC, "response": _PRIVACY_DOC},
    {"method": "GET", "pattern": "/v1/privacy", "handler": get_own_privacy, "user": True,
     "summary": "Who may see my presence (access token)", "response": _PRIVACY_DOC},
    {"method": "PUT", "pattern": "/v1/privacy", "handler": put_own_privacy, "user": True,
     "summary": "Set who may see my presence (access token)", "body": _PRIVACY_DOC,
     "response": _PRIVACY_DOC},
    {"method": "GET", "pattern": "/v1/users/{address}/contacts", "handler": get_contacts,
     "summary": "A user's contacts (who may see its presence under `contacts`)",
     "response": _CONTACTS},
    {"method": "PUT", "pattern": "/v1/users/{address}/contacts", "handler": put_contacts,
     "summary": f"Replace a user's contacts (at most {MAX_CONTACTS}); addresses that name"
                " no user of the app are left out and listed in `unknown`",
     "body": {"type": "object", "required": ["contacts"], "properties": {
         "contacts": _CONTACTS["properties"]["contacts"]}},  # type: ignore[index]
     "response": _CONTACTS},
]
