"""`/v1/stats` for one app: counted from the engine's sessions, never another app's.

Finding 8 of issue 12: the app-scoped route once reported the whole server's
connections.  An app sees its own figures; the server-wide ones are on the
operator route (`/v1/operator/stats`).
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.engine.clock import Clock
from appliance.engine.core import Engine

#: How long one count serves every app: a count walks every online user, so
#: an app polling in a loop costs at most one walk per this many seconds.
MAX_AGE_S = 1.0


@dataclass(frozen=True, slots=True)
class AppStats:
    """What `/v1/stats` reports to an app: its own users' figures."""

    sessions: int
    users_online: int


class AppFigures:
    """Per-app session and user counts, recounted at most every `MAX_AGE_S`."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._counted_at = -MAX_AGE_S
        self._counts: dict[int, AppStats] = {}

    def __call__(self, app_id: int) -> AppStats:
        now = self._clock.monotonic()
        if now - self._counted_at >= MAX_AGE_S:
            self._counts = self._count()
            self._counted_at = now
        return self._counts.get(app_id, AppStats(0, 0))

    def _count(self) -> dict[int, AppStats]:
        sessions: dict[int, int] = {}
        users: dict[int, int] = {}
        registry = self._engine.registry
        for user in registry.users():
            online = registry.sessions_of(user)
            if online:
                app = online[0].app_id  # a user belongs to one app
                sessions[app] = sessions.get(app, 0) + len(online)
                users[app] = users.get(app, 0) + 1
        return {app: AppStats(n, users[app]) for app, n in sessions.items()}
