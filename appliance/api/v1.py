"""The ``/v1`` routes: users, tokens, groups, messages, statistics (SPEC M8).

Every route but health and the OpenAPI document needs ``Authorization:
Bearer <app secret>`` and acts on that secret's app.  The route table below is
also what `openapi.document` describes, so the document cannot drift from
what the server does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.api.blocks import BLOCK_ROUTES
from appliance.api.edge import EDGE_ROUTES, EdgeControl
from appliance.api.files import FILE_ROUTES
from appliance.api.groups import GROUP_ROUTES
from appliance.api.http import ApiError, ApiRequest, ApiResponse, from_error, ok
from appliance.api.inputs import (
    checked,
    page_limit,
    parse_json,
    parse_json_object,
    path_segment,
)
from appliance.api.messages import MAX_BATCH, BackendSender
from appliance.api.metrics import METRICS_ROUTES, MetricsAccess
from appliance.api.pictures import PICTURE_ROUTES
from appliance.api.presence import PRESENCE_ROUTES, PresenceView
from appliance.api.previews import PREVIEW_ROUTES
from appliance.api.stats import AppStats
from appliance.api.uploads import UPLOAD_ROUTES
from appliance.api.usertokens import UserTokens
from appliance.engine.clock import Clock
from appliance.engine.groups import GroupManager
from appliance.errors import ApplianceError
from appliance.media.files import FileService
from appliance.media.previews import PreviewService
from appliance.protocol.wire import (
    MAX_ADDRESS_BYTES,
    PRIORITY_MAX,
    STORED_U64_MAX,
    TYPE_MAX,
    U32_MAX,
    U64_MAX,
)
from appliance.service.admin import (
    MAX_TOKEN_TTL_S,
    TOKEN_PREFIX,
    AdminService,
    CredentialsListener,
    app_for_secret,
    check_address,
    check_token_ttl,
    is_operator_key,
)
from appliance.storage.interface import Storage
from appliance.storage.models import AppInfo, Principal

SECRET_CACHE_S = 5.0
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stats:
    """What `/v1/operator/stats` reports: the whole server (operator scope)."""

    connections: int
    sessions: int
    commits: int
    failed_commits: int
    #: Sessions closed because their credentials were revoked, expired or renamed.
    credential_closes: int
    #: Refusals by reason: quotas (engine) and connection bounds (transport).
    refusals: dict[str, int]
    #: The served certificate: its source and, with ACME, its renewal (issue 13).
    tls: dict[str, object] = field(default_factory=dict)


Handler = Callable[["Call"], Awaitable[ApiResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str  # "/v1/users/{address}"
    handler: Handler
    summary: str
    auth: bool = True
    operator: bool = False  # needs the operator key instead of an app secret
    scrape: bool = False  # /metrics: the operator key, or an address in [metrics] allow
    #: Needs a user's access token (a device's credential) instead of an app secret;
    #: the handler finds the user in `Call.user` (issue 15: files, previews).
    user: bool = False
    #: Takes the app secret or a user's access token (told apart by their prefix);
    #: `Call.user` is set for the latter (presence: as that user may see it).
    either: bool = False
    #: The body goes to the handler as it arrives (`ApiRequest.stream`): uploads.
    stream: bool = False
    body: dict[str, Any] | None = None  # JSON schema of the request body
    response: dict[str, Any] | None = None  # JSON schema of the success body
    status: int = 200
    query: tuple[str, ...] = ()

    def regex(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.pattern) + "$")


@dataclass(slots=True)
class Call:
    """One authenticated request on its way through a handler."""

    request: ApiRequest
    params: dict[str, str]
    app: AppInfo | None
    api: RestApi
    #: The access token's owner, on routes declared ``user=True``.
    user: Principal | None = None

    def json(self) -> dict[str, Any]:
        return parse_json_object(self.request.body)

    def admin(self) -> AdminService:
        assert self.app is not None
        return AdminService(self.api.store, self.api.clock, self.app.name,
                            self.api.credentials)


def _field(doc: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...
           ) -> Any:
    value = doc.get(name, default)
    if value is ...:
        raise ApiError(422, "invalid request", f"{name!r} is required", field=name)
    if value is default and default is not ...:
        return value
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ApiError(422, "invalid request", f"{name!r} must be {names}", field=name)
    return value


# --- handlers ---------------------------------------------------------------------------


async def health(call: Call) -> ApiResponse:
    return ok(200, {"status": "ok"})


async def openapi_json(call: Call) -> ApiResponse:
    from appliance.api.openapi import document
    return ok(200, document(ROUTES))


async def list_users(call: Call) -> ApiResponse:
    query = call.request.query
    limit = page_limit(query)
    users = await call.admin().list_users(query.get("after", ""), limit + 1)
    more = len(users) > limit
    users = users[:limit]
    return ok(200, {"users": [{"address": u.address, "created_ms": u.created_ms} for u in users],
                    "next": users[-1].address if more and users else None})


async def create_user(call: Call) -> ApiResponse:
    address = checked(check_address, _field(call.json(), "address", str), "address")
    user = await call.admin().add_user(address)
    return ok(201, {"address": user.address, "created_ms": user.created_ms})


async def delete_user(call: Call) -> ApiResponse:
    await call.admin().delete_user(call.params["address"])
    return ApiResponse(204)


async def issue_token(call: Call) -> ApiResponse:
    ttl = checked(check_token_ttl, _field(call.json(), "ttl_s", int, 30 * 86400), "ttl_s")
    issued = await call.admin().issue_token(call.params["address"], ttl)
    return ok(201, {"token": issued.token, "expires_ms": issued.expires_ms})


async def revoke_tokens(call: Call) -> ApiResponse:
    return ok(200, {"revoked": await call.admin().revoke_tokens(call.params["address"])})


async def send_message(call: Call) -> ApiResponse:
    assert call.app is not None
    # No room for even one more message of this app: refused before the body is
    # parsed (a flood of arrays refused after parsing them held the core).
    call.api.sender.engine.submissions.check({call.app.app_id: 1})
    doc = parse_json(call.request.body)
    if isinstance(doc, list):  # a batch: one result per message (issue 16)
        return ok(200, {"results": await call.api.sender.send_batch(call.app, doc)})
    result = await call.api.sender.send(call.app, doc)
    return ok(201 if result["status"] == "SENT" else 200, result)


async def rename_user(call: Call) -> ApiResponse:
    new = checked(check_address, _field(call.json(), "address", str), "address")
    user = await call.admin().rename_user(call.params["address"], new)
    return ok(200, {"address": user.address, "created_ms": user.created_ms})


async def list_apps(call: Call) -> ApiResponse:
    apps = await AdminService(call.api.store, call.api.clock).list_apps()
    return ok(200, {"apps": [{"name": a.name, "created_ms": a.created_ms} for a in apps]})


async def create_app(call: Call) -> ApiResponse:
    app, secret = await AdminService(call.api.store, call.api.clock).add_app(
        _field(call.json(), "name", str))
    return ok(201, {"name": app.name, "created_ms": app.created_ms, "secret": secret})


async def new_app_secret(call: Call) -> ApiResponse:
    keep = _field(call.json(), "keep_old", bool, False)
    secret = await AdminService(call.api.store, call.api.clock,
                                call.params["name"]).issue_app_secret(replace=not keep)
    call.api.forget_secrets()
    return ok(201, {"secret": secret})


async def stats(call: Call) -> ApiResponse:
    assert call.app is not None
    s = call.api.app_stats(call.app.app_id)
    return ok(200, {"sessions": s.sessions, "users_online": s.users_online})


async def operator_stats(call: Call) -> ApiResponse:
    s = call.api.stats()
    edge = call.api.edge
    return ok(200, {"connections": s.connections, "sessions": s.sessions,
                    "commits": s.commits, "failed_commits": s.failed_commits,
                    "credential_closes": s.credential_closes,
                    "refusals": s.refusals,
                    # Every refusal of the edge is counted here (issue 12).
                    "edge": edge.snapshot() if edge is not None else {},
                    "tls": s.tls})


# --- the table ----------------------------------------------------------------------------

_ADDRESS = {"type": "string", "minLength": 1, "maxLength": MAX_ADDRESS_BYTES,
            "description": f"1-{MAX_ADDRESS_BYTES} bytes of UTF-8, stored in Unicode NFC; no"
                           " control, format (bidi, zero-width) or other invisible characters"}
_USER = {"type": "object", "properties": {"address": _ADDRESS, "created_ms": {"type": "integer"}},
         "required": ["address", "created_ms"]}
_MESSAGE_IN = {"type": "object", "properties": {
    "from": {**_ADDRESS, "description": "the sending user; absent: the app itself (@app)"},
    "to": _ADDRESS, "group": {"type": "integer", "minimum": 1, "maximum": STORED_U64_MAX},
    "text": {"type": "string"}, "payload_base64": {"type": "string"},
    "id": {"type": "integer", "minimum": 0, "maximum": U64_MAX},
    "refid": {"type": "integer", "minimum": 0, "maximum": U64_MAX},
    "expiry_s": {"type": "integer", "minimum": 0, "maximum": U32_MAX},
    "type": {"type": "integer", "minimum": 0, "maximum": TYPE_MAX},
    "priority": {"type": "integer", "minimum": 0, "maximum": PRIORITY_MAX},
    "flags": {"type": "integer", "minimum": 0, "maximum": 65535}}}
_MESSAGE_OUT = {"type": "object", "required": ["id", "status"], "properties": {
    "id": {"type": "integer"}, "status": {"type": "string"},
    "timestamp_ms": {"type": "integer"}}}

ROUTES: list[Route] = [
    Route("GET", "/v1/health", health, "Liveness", auth=False,
          response={"type": "object", "properties": {"status": {"type": "string"}}}),
    Route("GET", "/v1/openapi.json", openapi_json, "This document", auth=False,
          response={"type": "object"}),
    Route("GET", "/v1/users", list_users, "List users in address order, paged",
          query=("after", "limit"),
          response={"type": "object", "properties": {
              "users": {"type": "array", "items": _USER},
              "next": {"type": ["string", "null"]}}}),
    Route("POST", "/v1/users", create_user, "Create a user", status=201,
          body={"type": "object", "required": ["address"], "properties": {"address": _ADDRESS}},
          response=_USER),
    Route("PATCH", "/v1/users/{address}", rename_user, "Give a user a new address",
          body={"type": "object", "required": ["address"], "properties": {"address": _ADDRESS}},
          response=_USER),
    Route("DELETE", "/v1/users/{address}", delete_user,
          "Delete a user, its tokens, devices and queued messages", status=204),
    Route("POST", "/v1/users/{address}/tokens", issue_token, "Issue an access token", status=201,
          body={"type": "object", "properties": {"ttl_s": {
              "type": "integer", "minimum": 1, "maximum": MAX_TOKEN_TTL_S}}},
          response={"type": "object", "properties": {"token": {"type": "string"},
                                                     "expires_ms": {"type": "integer"}}}),
    Route("DELETE", "/v1/users/{address}/tokens", revoke_tokens,
          "Revoke every access token of a user",
          response={"type": "object", "properties": {"revoked": {"type": "integer"}}}),
    Route("POST", "/v1/messages", send_message,
          "Send a message as a user of the app, or as the app (stored and delivered like"
          f" any other); an array sends up to {MAX_BATCH} at once, answered 200 with one"
          " result per message (`results`: the answer, or `error`: a problem object);"
          " while the server holds as many sent messages not yet answered as it takes"
          " (`limits.max_app_submitted` of this app, `limits.max_submitted` in all), the"
          " request is refused whole, 429 or 503 with Retry-After",
          status=201, body={"oneOf": [_MESSAGE_IN, {"type": "array", "items": _MESSAGE_IN,
                                                    "minItems": 1, "maxItems": MAX_BATCH}]},
          response=_MESSAGE_OUT),
    Route("GET", "/v1/apps", list_apps, "List apps (operator key)", operator=True,
          response={"type": "object", "properties": {"apps": {"type": "array", "items": {
              "type": "object", "properties": {"name": {"type": "string"},
                                               "created_ms": {"type": "integer"}}}}}}),
    Route("POST", "/v1/apps", create_app, "Create an app and its first secret (operator key)",
          operator=True, status=201,
          body={"type": "object", "required": ["name"], "properties": {
              "name": {"type": "string", "minLength": 1, "maxLength": 64,
                       "pattern": "^[A-Za-z0-9._-]+$"}}},
          response={"type": "object", "properties": {"name": {"type": "string"},
                                                     "secret": {"type": "string"}}}),
    Route("POST", "/v1/apps/{name}/secrets", new_app_secret,
          "Issue a new app secret, revoking the old ones unless keep_old (operator key)",
          operator=True, status=201,
          body={"type": "object", "properties": {"keep_old": {"type": "boolean"}}},
          response={"type": "object", "properties": {"secret": {"type": "string"}}}),
    Route("GET", "/v1/stats", stats, "This app's statistics: its connected devices"
          " (sessions) and users online",
          response={"type": "object", "properties": {
              k: {"type": "integer"} for k in ("sessions", "users_online")}}),
    Route("GET", "/v1/operator/stats", operator_stats,
          "Server-wide statistics, every app together (operator key)", operator=True,
          response={"type": "object", "properties": {
              **{k: {"type": "integer"} for k in ("connections", "sessions", "commits",
                                                  "failed_commits", "credential_closes")},
              "refusals": {"type": "object", "additionalProperties": {"type": "integer"},
                           "description": "refusals by reason: rate_limited, inbox_full,"
                                          " submitted_busy, submitted_app,"
                                          " device_registration_rate, slow_consumer,"
                                          " h2_control_flood, h2_rapid_reset, h2_rate_ignored,"
                                          " http_request_timeout, http_rate_limited"},
              "edge": {"type": "object", "additionalProperties": {"type": "integer"},
                       "description": "the connection edge's counters, as GET /v1/edge"},
              "tls": {"type": "object", "description":
                      "the served certificate: `serving` is acme, provided or self-signed;"
                      " with ACME, `certificate` has its hostnames, issuer, not_after,"
                      " next_renewal, failed_attempts, next_attempt and last_error, as"
                      " `tidings cert status` prints them"}}}),
    *(Route(**spec) for spec in GROUP_ROUTES),
    *(Route(**spec) for spec in EDGE_ROUTES),
    *(Route(**spec) for spec in FILE_ROUTES),
    *(Route(**spec) for spec in UPLOAD_ROUTES),
    *(Route(**spec) for spec in PICTURE_ROUTES),
    *(Route(**spec) for spec in PREVIEW_ROUTES),
    *(Route(**spec) for spec in METRICS_ROUTES),
    *(Route(**spec) for spec in PRESENCE_ROUTES),
    *(Route(**spec) for spec in BLOCK_ROUTES),
]


def _bearer(request: ApiRequest) -> str:
    """The request's bearer credential, as sent (empty when none)."""
    scheme, _, value = request.headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


class RestApi:
    """Dispatches `ApiRequest`s to the route table."""

    def __init__(self, store: Storage, clock: Clock, sender: BackendSender,
                 stats: Callable[[], Stats], app_stats: Callable[[int], AppStats]) -> None:
        self.store = store
        self.clock = clock
        self.sender = sender
        self.stats = stats
        self.app_stats = app_stats
        self._routes = [(r, r.regex()) for r in ROUTES]
        #: (method, pattern) of the routes whose bodies stream to their handler.
        self._streamed = [(r.method, pattern) for r, pattern in self._routes if r.stream]
        #: Asked on every request's headers: most (GET, DELETE) need no regex at all.
        self._streamed_methods = frozenset(method for method, _ in self._streamed)
        self._secrets: dict[str, tuple[AppInfo, float]] = {}
        #: Users' access tokens, for the routes declared ``user=True`` (and downloads).
        self.tokens = UserTokens(store, clock)
        #: This process's live sessions, told of credential changes made here.
        self.credentials: CredentialsListener | None = None
        #: The connection edge (operator routes), and its hook: (connection, passed).
        self.edge: EdgeControl | None = None
        self.on_auth: Callable[[Any, bool], None] = lambda connection, passed: None
        #: `/metrics` (None: this server exports none).
        self.metrics: MetricsAccess | None = None
        #: Group changes and their announcements (the engine's); None: read-only here.
        self.groups: GroupManager | None = None
        #: Files, images and previews (issue 15); None: not served by this API.
        self.files: FileService | None = None
        self.previews: PreviewService | None = None
        #: The engine's presence (issue 16); None: not served by this API.
        self.presence: PresenceView | None = None

    async def handle(self, request: ApiRequest) -> ApiResponse:
        """The response to `request`; never raises."""
        try:
            return await self._dispatch(request)
        except ApplianceError as exc:
            return from_error(exc)
        except Exception:  # a bug must cost one request a 500, not the connection
            log.exception("%s %s failed", request.method, request.path)
            return from_error(ApplianceError("internal error"))

    def streams(self, method: str, path: str) -> bool:
        """Whether `method path` is an upload whose body streams to its handler."""
        if method not in self._streamed_methods:
            return False
        return any(m == method and p.match(path) for m, p in self._streamed)

    async def _dispatch(self, request: ApiRequest) -> ApiResponse:
        allowed = []
        for route, pattern in self._routes:
            match = pattern.match(request.path)
            if match is None:
                continue
            if route.method != request.method and not (route.method == "GET"
                                                        and request.method == "HEAD"):
                allowed.append(route.method)
                continue
            user: Principal | None = None
            app: AppInfo | None = None
            try:
                if route.scrape:
                    await self._authenticate_scraper(request)
                elif route.operator:
                    await self._authenticate_operator(request)
                elif route.user or (route.either and _bearer(request).startswith(TOKEN_PREFIX)):
                    user = await self.tokens.authenticate(request)
                else:
                    app = await self._authenticate(request) if route.auth else None
            except ApiError:  # a 401: counts against the address (auto-blocking)
                self.on_auth(request.connection, False)
                if route.scrape and self.metrics is not None:
                    self.metrics.refused += 1
                raise
            if route.auth:
                self.on_auth(request.connection, True)
            # Matched on the raw target, so an escaped "/" (%2F) stays inside
            # its segment; then each segment is percent-decoded (RFC 3986).
            params = {k: path_segment(v) for k, v in match.groupdict().items()}
            return await route.handler(Call(request, params, app, self, user))
        if allowed:
            raise ApiError(405, "method not allowed",
                           f"{request.path} allows {', '.join(sorted(set(allowed)))}")
        raise ApiError(404, "not found", f"no resource at {request.path}")

    def forget_secrets(self) -> None:
        """Drop cached app secrets (after a rotation through this API or elsewhere)."""
        self._secrets.clear()

    def forget_tokens(self) -> None:
        """Drop cached access tokens and senders (users' tokens were revoked, or users
        deleted or renamed: a cached sender would send as a user that is gone)."""
        self.tokens.forget()
        self.sender.forget_users()

    async def _authenticate_operator(self, request: ApiRequest) -> None:
        scheme, _, key = request.headers.get(b"authorization", b"").decode(
            "latin-1").partition(" ")
        if scheme.lower() != "bearer" or not await is_operator_key(self.store, key.strip()):
            raise ApiError(401, "unauthorized",
                           "this route needs the operator key (tidings operator key)")

    async def _authenticate_scraper(self, request: ApiRequest) -> None:
        """`/metrics`: an address in ``[metrics] allow``, else the operator key."""
        exporter = self.metrics
        if exporter is not None and exporter.allows(request.connection):
            return
        if (exporter is not None and exporter.has_allowlist
                and b"authorization" not in request.headers):
            raise ApiError(403, "forbidden", "this address is not in metrics.allow;"
                           " or send the operator key (tidings operator key)")
        await self._authenticate_operator(request)

    async def _authenticate(self, request: ApiRequest) -> AppInfo:
        header = request.headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <app secret>")
        secret = secret.strip()
        now = self.clock.monotonic()
        cached = self._secrets.get(secret)
        if cached is not None and cached[1] > now:
            return cached[0]
        app = await app_for_secret(self.store, secret)
        if app is None:
            raise ApiError(401, "unauthorized", "unknown or revoked app secret")
        # A store read per request cost more than the rest of a small request;
        # a revoked secret keeps working for at most `SECRET_CACHE_S` (the
        # credential watcher drops the cache within `limits.credentials_poll_s`
        # when another process replaces a secret).
        if len(self._secrets) > 10_000:
            self._secrets.clear()
        self._secrets[secret] = (app, now + SECRET_CACHE_S)
        return app
