"""The OpenAPI 3.1 document of ``/v1``, generated from the route table (`v1.ROUTES`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from appliance import __version__
from appliance.api.http import PROBLEMS
from appliance.api.inputs import MAX_PAGE
from appliance.protocol.wire import STORED_U64_MAX

if TYPE_CHECKING:
    from appliance.api.v1 import Route

_PROBLEM = {"type": "object", "required": ["type", "title", "status"], "properties": {
    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
    "detail": {"type": "string"}}}


def document(routes: list[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 description of `routes`."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"{route.method.lower()}_{route.handler.__name__}",
            "responses": _responses(route),
        }
        params = [{"name": name, "in": "path", "required": True,
                   "schema": {"type": "integer", "minimum": 0, "maximum": STORED_U64_MAX}
                   if name.endswith("_id")
                   else {"type": "string", "minLength": 1,
                         "description": "percent-encoded UTF-8 (RFC 3986): a%2Fb is a/b"}}
                  for name in re.findall(r"\{(\w+)\}", route.pattern)]
        params += [_query(route, q) for q in route.query]
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": route.body}}}
        elif route.stream:
            op["requestBody"] = {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}}
        if route.user:
            op["security"] = [{"accessToken": []}]
        elif route.either:
            op["security"] = [{"appSecret": []}, {"accessToken": []}]
        elif not route.auth:
            op["security"] = []
        elif route.operator:
            op["security"] = [{"operatorKey": []}]
        paths.setdefault(route.pattern, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tidings backend API", "version": __version__,
                 "description": "Manage users, tokens and groups of an app and send messages"
                                " from its backend. Errors are RFC 9457 problem+json."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "appSecret": {"type": "http", "scheme": "bearer",
                              "description": "the app secret (tds_...)"},
                "operatorKey": {"type": "http", "scheme": "bearer",
                                "description": "the operator key (tdo_...)"},
                "accessToken": {"type": "http", "scheme": "bearer",
                                "description": "a user's access token (tdt_...), as a device"
                                               " uses it"}},
            "schemas": {"Problem": _PROBLEM},
        },
        "security": [{"appSecret": []}],
    }


def _query(route: Route, name: str) -> dict[str, Any]:
    if name == "limit":
        return {"name": "limit", "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}}
    if name != "after":  # media: names, sizes, formats, signed-link fields, URLs
        return {"name": name, "in": "query", "schema": {"type": "string"}}
    if route.pattern == "/v1/groups":  # groups page by id, users by address
        return {"name": "after", "in": "query",
                "schema": {"type": "integer", "minimum": 0, "maximum": STORED_U64_MAX}}
    return {"name": "after", "in": "query", "schema": {"type": "string"}}


def _responses(route: Route) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "success"}
    if route.response is not None and route.status != 204:
        success["content"] = {"application/json": {"schema": route.response}}
    out: dict[str, Any] = {str(route.status): success}
    codes = {400, 404, 405, 413, 422, 500, 503}
    if route.auth:
        codes.add(401)
    if route.scrape:  # the text exposition format; 403: address not allowed; 429: paced
        success["content"] = {"text/plain": {"schema": {"type": "string"}}}
        codes.update({403, 429})
    codes.update(status for _, status, _ in PROBLEMS)
    if route.handler.__name__ == "send_message":
        codes.update({403, 429, 507})
    if route.pattern in ("/v1/users", "/v1/groups", "/v1/apps", "/v1/users/{address}"):
        codes.add(409)
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for code in sorted(codes):
        out[str(code)] = {"description": "problem", "content": problem}
    if route.method == "GET":
        out.pop("413", None)
    return out
