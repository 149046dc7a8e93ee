"""Users' access tokens on REST routes (issue 15: uploads, downloads, previews).

A device's token (SPEC M1) is what a user's app holds, so the media routes
take it as ``Authorization: Bearer <access token>``, never the app secret
(which stays on the app's backend).  The token is looked up by its hash, as
HELLO does; a found owner is cached for at most `TOKEN_CACHE_S` and never past
the token's expiry, so a revoked token stops working within that time (the
same bound as app secrets, `SECRET_CACHE_S`).
"""

from __future__ import annotations

from appliance.api.http import ApiError, ApiRequest
from appliance.credentials import token_hash
from appliance.engine.clock import Clock
from appliance.storage.interface import Storage
from appliance.storage.models import Principal

TOKEN_CACHE_S = 5.0
#: Cached tokens at most; past it the cache starts over (a flood of distinct
#: valid tokens costs store reads, not memory).
MAX_CACHED = 10_000
#: Access tokens are 22+ characters of base64url; anything longer is not one.
MAX_TOKEN_CHARS = 512


class UserTokens:
    """Finds the user an access token belongs to."""

    def __init__(self, store: Storage, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def authenticate(self, request: ApiRequest) -> Principal:
        """The token's owner.

        Raises:
            ApiError: 401, no token, an unknown, revoked or expired one.
        """
        scheme, _, token = request.headers.get(b"authorization", b"").decode(
            "latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <access token>")
        return await self.owner(token)

    async def owner(self, token: str) -> Principal:
        now = self._clock.monotonic()
        cached = self._cache.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        digest = token_hash(token.encode("latin-1"))
        principal = (await self._store.token_owners([digest])).get(digest)
        now_ms = self._clock.wall_ms()
        if principal is None or principal.token_expires_ms <= now_ms:
            raise ApiError(401, "unauthorized", "unknown, revoked or expired access token")
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        until = min(now + TOKEN_CACHE_S, now + (principal.token_expires_ms - now_ms) / 1000)
        self._cache[token] = (principal, until)
        return principal

    def forget(self) -> None:
        self._cache.clear()
