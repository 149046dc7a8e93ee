"""``/v1/groups`` and ``/v1/messages/{id}/receipts``: groups for the app's backend (SPEC M5).

Changes go through the engine's `GroupManager`, as a member's GROUP_MANAGE
does, so that the members hear of them (announcements from ``@app``, PROTOCOL.md
§8.3); the app secret may change any group of its app.  A group's `flags` and
a member's `perms` are lists of names (``send_by_selected``, ``no_store``;
``send``, ``receive``, ``admin``; the older comma-separated string is taken
for perms too).  The receipts route lists, for a message the app or one of its
users sent, each recipient's status and the aggregate (PROTOCOL.md §8.4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from appliance.api.http import ApiError, ApiResponse, ok
from appliance.api.inputs import checked, decimal, page_limit
from appliance.engine.groups import GroupManager
from appliance.names import APP_SENDER, MAX_GROUP_NAME_BYTES, check_address, check_group_name
from appliance.protocol.wire import STORED_U64_MAX, Status
from appliance.protocol.wire.constants import MAX_ADDRESS_BYTES, U64_MAX
from appliance.protocol.wire.groups import FLAG_NAMES, PERM_NAMES, bit_names
from appliance.storage.models import GroupFlag, GroupInfo, Perm

if TYPE_CHECKING:
    from appliance.api.v1 import Call

#: Members one request may add and remove (the body's 1 MiB allows more).
MAX_MEMBERS_PER_REQUEST: Final = 1000
#: Members one page of ``GET /v1/groups`` lists, about: the page ends after the group
#: that reaches it.  Unbounded, 200 groups of 2,000 members were one answer of 29 MB
#: and +261 MiB of RSS, built while the event loop did nothing else for 1 s.
MAX_PAGE_MEMBERS: Final = 10_000


def manager(call: Call) -> GroupManager:
    groups = call.api.groups
    if groups is None:
        raise ApiError(503, "unavailable", "groups cannot be changed on this server")
    return groups


def group_doc(g: GroupInfo) -> dict[str, Any]:
    return {"id": g.group_id, "name": g.name, "flags": bit_names(g.flags, FLAG_NAMES),
            "members": [{"address": m.address.decode("utf-8", "replace"),
                         "perms": ",".join(bit_names(m.perms, PERM_NAMES)) or "-"}
                        for m in g.members]}


def _names(value: Any, names: dict[str, int], field: str) -> int:
    """Bits from a list of names (or a comma-separated string of them)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip() and v.strip() != "-"]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(422, "invalid request", f"{field!r} must be a list of names", field=field)
    bits = 0
    for name in value:
        if name not in names:
            raise ApiError(422, "invalid request", f"unknown {field} {name[:40]!r}; use"
                           f" {', '.join(names)}", field=field)
        bits |= names[name]
    return bits


def _addresses(doc: dict[str, Any], field: str) -> list[bytes]:
    value = doc.get(field, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(422, "invalid request", f"{field!r} must be a list of addresses",
                       field=field)
    if len(value) > MAX_MEMBERS_PER_REQUEST:
        raise ApiError(422, "invalid request", f"at most {MAX_MEMBERS_PER_REQUEST} addresses"
                       " per request", field=field)
    return [checked(check_address, v, field).encode() for v in value]


def _group_id(call: Call) -> int:
    value = call.params["group_id"]
    number = decimal(value, STORED_U64_MAX)
    if number is None:
        raise ApiError(404, "not found", f"no group {value[:40]!r}")
    return number


def _name(doc: dict[str, Any]) -> str:
    name = doc.get("name")
    if not isinstance(name, str):
        raise ApiError(422, "invalid request", "'name' must be a string", field="name")
    return checked(check_group_name, name, "name")


# --- handlers -------------------------------------------------------------------------------


async def list_groups(call: Call) -> ApiResponse:
    query = call.request.query
    limit = page_limit(query)
    after = 0
    if "after" in query:
        found = decimal(query["after"], STORED_U64_MAX)
        if found is None:
            raise ApiError(422, "invalid request", "after must be a group id", field="after")
        after = found
    groups = await call.admin().list_groups(after, limit + 1, MAX_PAGE_MEMBERS)
    more = len(groups) > limit or sum(len(g.members) for g in groups) >= MAX_PAGE_MEMBERS
    groups = groups[:limit]
    return ok(200, {"groups": [group_doc(g) for g in groups],
                    "next": groups[-1].group_id if more and groups else None})


async def create_group(call: Call) -> ApiResponse:
    assert call.app is not None
    doc = call.json()
    perms = _names(doc.get("perms", list(bit_names(Perm.DEFAULT, PERM_NAMES))), PERM_NAMES,
                   "perms")
    flags = _names(doc.get("flags", bit_names(GroupFlag.DEFAULT, FLAG_NAMES)), FLAG_NAMES,
                   "flags")
    members = [(address, perms) for address in _addresses(doc, "members")]
    group = await manager(call).create(call.app.app_id, _name(doc), members, flags)
    return ok(201, group_doc(group))


async def get_group(call: Call) -> ApiResponse:
    return ok(200, group_doc(await call.admin().get_group(_group_id(call))))


async def update_group(call: Call) -> ApiResponse:
    assert call.app is not None
    doc = call.json()
    name = _name(doc) if "name" in doc else None
    flags = _names(doc["flags"], FLAG_NAMES, "flags") if "flags" in doc else None
    if name is None and flags is None:
        raise ApiError(422, "invalid request", "give 'name', 'flags' or both")
    group = await manager(call).update(call.app.app_id, _group_id(call), name=name,
                                       flags=flags)
    return ok(200, group_doc(group))


async def delete_group(call: Call) -> ApiResponse:
    assert call.app is not None
    await manager(call).delete(call.app.app_id, _group_id(call))
    return ApiResponse(204)


async def change_members(call: Call) -> ApiResponse:
    assert call.app is not None
    doc = call.json()
    add, remove = _addresses(doc, "add"), _addresses(doc, "remove")
    perms = _names(doc.get("perms", list(bit_names(Perm.DEFAULT, PERM_NAMES))), PERM_NAMES,
                   "perms")
    group = await manager(call).change(call.app.app_id, _group_id(call),
                                       [(a, perms) for a in add], remove)
    return ok(200, group_doc(group))


async def message_receipts(call: Call) -> ApiResponse:
    assert call.app is not None
    msg_id = decimal(call.params["id"], U64_MAX)
    if msg_id is None:
        raise ApiError(404, "not found", f"no message {call.params['id'][:40]!r}")
    query = call.request.query
    sender = query.get("from", APP_SENDER)
    if sender != APP_SENDER:
        sender = checked(check_address, sender, "from")
    after = query.get("after", "")
    if len(after.encode()) > MAX_ADDRESS_BYTES:
        raise ApiError(422, "invalid request", "after must be an address", field="after")
    store = call.api.store
    user = await store.find_user(call.app.app_id, sender.encode())
    found = None if user is None else await store.message_receipts(
        call.app.app_id, user, msg_id, after.encode(), page_limit(query))
    if found is None:
        raise ApiError(404, "not found", f"no message {msg_id} from {sender!r} is stored")
    members = [{"address": m.address.decode("utf-8", "replace"),
                "status": Status(m.status).name, "timestamp_ms": m.timestamp_ms}
               for m in found.members]
    return ok(200, {"id": found.msg_id, "group": found.group_id or None,
                    "status": Status(found.status).name, "accepted_ms": found.accepted_ms,
                    "recipients": found.recipients, "delivered": found.delivered,
                    "read": found.read, "delivered_all": found.delivered_all,
                    "read_all": found.read_all, "members": members,
                    "next": members[-1]["address"] if members
                    and len(members) == page_limit(query) else None})


# --- the routes ---------------------------------------------------------------------------

_ADDRESS = {"type": "string", "minLength": 1, "maxLength": MAX_ADDRESS_BYTES}
_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_GROUP_NAME_BYTES,
         "description": f"1-{MAX_GROUP_NAME_BYTES} bytes of UTF-8"}
_FLAGS = {"type": "array", "items": {"type": "string", "enum": list(FLAG_NAMES)},
          "description": "send_by_selected: only members with send may post (the default);"
                         " no_store: real-time only, nothing stored"}
_PERMS = {"oneOf": [{"type": "array", "items": {"type": "string", "enum": list(PERM_NAMES)}},
                    {"type": "string", "description": "comma-separated: send, receive, admin"}]}
_GROUP = {"type": "object", "required": ["id", "name", "flags", "members"], "properties": {
    "id": {"type": "integer"}, "name": _NAME, "flags": _FLAGS,
    "members": {"type": "array", "items": {"type": "object", "properties": {
        "address": _ADDRESS, "perms": {"type": "string"}}}}}}
_LIST = {"type": "array", "items": _ADDRESS, "maxItems": MAX_MEMBERS_PER_REQUEST}
_STATUS = {"type": "string", "enum": [s.name for s in Status]}
_RECEIPTS = {"type": "object", "properties": {
    "id": {"type": "integer"}, "group": {"type": ["integer", "null"]}, "status": _STATUS,
    "accepted_ms": {"type": "integer"}, "recipients": {"type": "integer"},
    "delivered": {"type": "integer"}, "read": {"type": "integer"},
    "delivered_all": {"type": "boolean"}, "read_all": {"type": "boolean"},
    "members": {"type": "array", "items": {"type": "object", "properties": {
        "address": _ADDRESS, "status": _STATUS, "timestamp_ms": {"type": "integer"}}}},
    "next": {"type": ["string", "null"]}}}

GROUP_ROUTES: list[dict[str, Any]] = [
    {"method": "GET", "pattern": "/v1/groups", "handler": list_groups,
     "summary": "List groups in id order, paged (`limit` groups, fewer once their members"
                f" pass {MAX_PAGE_MEMBERS}; `next` is the cursor)", "query": ("after", "limit"),
     "response": {"type": "object", "properties": {
         "groups": {"type": "array", "items": _GROUP},
         "next": {"type": ["integer", "null"]}}}},
    {"method": "POST", "pattern": "/v1/groups", "handler": create_group, "status": 201,
     "summary": "Create a group (its members hear it: PROTOCOL.md §8.3)",
     "body": {"type": "object", "required": ["name"], "properties": {
         "name": _NAME, "members": _LIST, "perms": _PERMS, "flags": _FLAGS}},
     "response": _GROUP},
    {"method": "GET", "pattern": "/v1/groups/{group_id}", "handler": get_group,
     "summary": "A group and its members", "response": _GROUP},
    {"method": "PATCH", "pattern": "/v1/groups/{group_id}", "handler": update_group,
     "summary": "Rename a group and/or set its flags (announced to its members)",
     "body": {"type": "object", "properties": {"name": _NAME, "flags": _FLAGS}},
     "response": _GROUP},
    {"method": "DELETE", "pattern": "/v1/groups/{group_id}", "handler": delete_group,
     "status": 204, "summary": "Delete a group (its members hear it first; what was sent"
                               " before is still delivered)"},
    {"method": "POST", "pattern": "/v1/groups/{group_id}/members", "handler": change_members,
     "summary": "Add, re-permission and remove members (announced to the members)",
     "body": {"type": "object", "properties": {"add": _LIST, "remove": _LIST,
                                               "perms": _PERMS}},
     "response": _GROUP},
    {"method": "GET", "pattern": "/v1/messages/{id}/receipts", "handler": message_receipts,
     "query": ("from", "after", "limit"), "response": _RECEIPTS,
     "summary": "Where a stored message stands: for a group message each recipient's status"
                " (paged by address) and whether all delivered / read it. `from`: its sender"
                f" (default {APP_SENDER}, the app)"},
]
