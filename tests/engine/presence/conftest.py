"""An engine over a real SQLite store with users in two apps, fake links, a hand-moved clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from appliance.config.limits import EngineLimits
from appliance.credentials import token_hash
from appliance.engine.clock import FakeClock
from appliance.engine.core import Engine
from appliance.engine.session import Session
from appliance.protocol.wire import Hello, HelloFlag
from appliance.protocol.wire.presence import (
    PresenceEntry,
    PresenceKind,
    PresenceSet,
    PresenceState,
    PresenceSubscribe,
    PresenceUpdate,
    SubscribeOp,
)
from appliance.storage.sqlite import SqliteStorage
from tests.engine.test_delivery import FakeLink, Scheduler

OTHER_APP = "other"
Runner = Callable[..., None]
ONLINE, OFFLINE, UNKNOWN = PresenceState.ONLINE, PresenceState.OFFLINE, PresenceState.UNKNOWN
TYPING, STOPPED = PresenceState.TYPING, PresenceState.TYPING_STOPPED


@dataclass
class World:
    engine: Engine
    store: SqliteStorage
    clock: FakeClock
    scheduler: Scheduler
    #: "name" (app 1) or "other/name" -> token
    tokens: dict[str, bytes]
    ids: dict[str, int]
    other_app: int
    links: list[FakeLink] = field(default_factory=list)

    async def connect(self, name: str, device: str = "d1", *, extensions: bool = True
                      ) -> tuple[Session, FakeLink]:
        link = FakeLink()
        flags = HelloFlag.EXTENSIONS if extensions else 0
        session = await self.engine.open_session(
            link, Hello(self.tokens[name], device.encode(), client_flags=flags))
        self.links.append(link)
        await self.settle()
        return session, link

    async def settle(self) -> None:
        await self.scheduler.settle()
        await asyncio.sleep(0)


def presence(link: FakeLink) -> list[PresenceEntry]:
    """Every presence entry `link` received so far, in order."""
    return [e for ev in link.events if isinstance(ev, PresenceUpdate) for e in ev.entries]


def frames(link: FakeLink) -> list[PresenceUpdate]:
    return [ev for ev in link.events if isinstance(ev, PresenceUpdate)]


def states(link: FakeLink) -> list[tuple[bytes, int]]:
    return [(e.address, e.state) for e in presence(link)]


def clear(*links: FakeLink) -> None:
    for link in links:
        link.events.clear()



def subscribe(*names: bytes) -> PresenceSubscribe:
    return PresenceSubscribe(SubscribeOp.ADD, names)


def typing_to(peer: bytes = b"", group: int = 0, active: bool = True) -> PresenceSet:
    kind = PresenceKind.TYPING if active else PresenceKind.TYPING_STOPPED
    return PresenceSet(kind, peer=peer, group_id=group)


Body = Callable[[World], Coroutine[Any, Any, None]]


@pytest.fixture
def world_runner(tmp_path: Path) -> Callable[..., None]:
    def runner(body: Body, *, names: tuple[str, ...] = ("alice", "bob", "carol"),
               limits: EngineLimits | None = None) -> None:
        async def main() -> None:
            clock = FakeClock()
            store = await SqliteStorage.open(tmp_path / "p.sqlite3", clock.wall_ms())
            tokens: dict[str, bytes] = {}
            ids: dict[str, int] = {}
            other = (await store.create_app(OTHER_APP, clock.wall_ms())).app_id
            for app, prefix, users in ((1, "", names), (other, f"{OTHER_APP}/",
                                                          ("mallory", "alice"))):
                for name in users:
                    user = await store.create_user(app, name, clock.wall_ms())
                    key = prefix + name
                    tokens[key] = f"tok-{key}".encode()
                    ids[key] = user.user_id
                    await store.store_token(user.user_id, token_hash(tokens[key]),
                                            clock.wall_ms() + 10**9, clock.wall_ms())
            scheduler = Scheduler()
            engine = Engine(store, clock, limits or EngineLimits(commit_window_ms=0.0),
                            scheduler)
            world = World(engine, store, clock, scheduler, tokens, ids, other)
            try:
                await body(world)
            finally:
                await scheduler.settle()
                await store.close()
        asyncio.run(main())
    return runner
