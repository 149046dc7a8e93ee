"""An engine on a real store (SQLite or MariaDB), users with tokens, devices on fake links."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from appliance.config.limits import EngineLimits
from appliance.credentials import token_hash
from appliance.engine.clock import FakeClock
from appliance.engine.core import Engine
from appliance.engine.session import Session
from appliance.protocol.wire import Flag, Hello, HelloFlag, Message, StatusReport
from appliance.protocol.wire.groups import GroupResult
from appliance.storage.interface import Storage
from tests.engine.test_delivery import FakeLink, Scheduler
from tests.storage.conftest import Opener


@dataclass
class World:
    engine: Engine
    store: Storage
    sched: Scheduler
    clock: FakeClock
    users: dict[str, int] = field(default_factory=dict)

    async def user(self, name: str, app: int = 1) -> int:
        user = (await self.store.create_user(app, name, self.clock.wall_ms())).user_id
        await self.store.store_token(user, token_hash(f"tok-{name}".encode()),
                                     self.clock.wall_ms() + 10**9, self.clock.wall_ms())
        self.users[name] = user
        return user

    async def connect(self, name: str, device: bytes = b"d", *, extensions: bool = True
                      ) -> tuple[Session, FakeLink]:
        link = FakeLink()
        flags = HelloFlag.EXTENSIONS if extensions else 0
        session = await self.engine.open_session(
            link, Hello(f"tok-{name}".encode(), device, client_flags=flags))
        await self.sched.settle()
        return session, link

    async def settle(self) -> None:
        await self.sched.settle()


def run(backend: Opener, body: Callable[[World], Coroutine[Any, Any, None]],
        limits: EngineLimits | None = None) -> None:
    async def main() -> None:
        clock = FakeClock()
        store = await backend()
        sched = Scheduler()
        engine = Engine(store, clock, limits or EngineLimits(commit_window_ms=0.0), sched)
        try:
            await body(World(engine, store, sched, clock))
        finally:
            await sched.settle()
            await store.close()
    asyncio.run(main())


def announcements(link: FakeLink) -> list[dict[str, Any]]:
    """The system messages a device got, parsed (each checked to come from @app)."""
    out = []
    for m in link.messages():
        if m.flags & Flag.SYSTEM:
            assert m.peer == b"@app"
            assert m.seq  # stored
            out.append(json.loads(m.payload))
    return out


def ordinary(link: FakeLink) -> list[Message]:
    return [m for m in link.messages() if not m.flags & Flag.SYSTEM]


def results(link: FakeLink) -> list[tuple[int, int, int, int]]:
    return [(e.request_id, e.result, e.group_id, e.members) for e in link.events
            if isinstance(e, GroupResult)]


def reports(link: FakeLink) -> list[tuple[int, int, bytes]]:
    return [(e.id, e.status, e.peer) for e in link.events
            if isinstance(e, StatusReport) and e.report_seq]
