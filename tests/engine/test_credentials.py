"""The credential watcher in process: real SQLite store, fake links, a clock moved by hand."""

from __future__ import annotations

import asyncio
from pathlib import Path

from appliance.credentials import token_hash
from appliance.engine.core import Engine
from appliance.errors import StorageUnavailableError
from appliance.protocol.wire import CloseCode, Hello
from appliance.storage.models import CredentialChange, Login
from tests.engine.test_delivery import FakeLink, FlakyStore, Scheduler, _alice_and_bob, run

HOUR_MS = 3_600_000


async def _token(store: FlakyStore, engine: Engine, user: str, token: bytes,
                 ttl_ms: int) -> None:
    user_id = await store.find_user(1, user.encode())
    assert user_id is not None
    now = engine.clock.wall_ms()
    await store.store_token(user_id, token_hash(token), now + ttl_ms, now)


def test_a_session_closes_when_its_token_expires(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        await _token(store, engine, "alice", b"short", 1500)
        link = FakeLink()
        session = await engine.open_session(link, Hello(b"short", b"phone"))
        _, _, bob, bob_link = await _alice_and_bob(engine, sched, tokens)
        watcher = engine.credentials
        assert watcher.next_expiry_ms() == engine.clock.wall_ms() + 1500
        assert watcher.expire(engine.clock.wall_ms()) == 0
        engine.clock.advance(1.5)  # type: ignore[attr-defined]
        assert watcher.expire(engine.clock.wall_ms()) == 1
        assert link.closed is not None
        assert link.closed[0] == CloseCode.TOKEN_EXPIRED
        assert session.closed
        assert engine.registry.session_of_device(session.device_rowid) is None
        assert bob_link.closed is None
        assert not bob.closed
    run(tmp_path, body)


def test_the_expiry_heap_does_not_keep_closed_sessions(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        for _ in range(1300):  # connect/close churn of a long-lived token (one device:
            # new device ids are rate-limited per user)
            session = await engine.open_session(FakeLink(), Hello(tokens["alice"], b"d"))
            engine.close_session(session)
            engine.credentials.expire(engine.clock.wall_ms())
        assert len(engine.credentials._expiries) <= 1024 + 2
        await sched.settle()
    run(tmp_path, body)


def test_revocation_from_another_process_closes_only_that_users_sessions(tmp_path: Path
                                                                          ) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        watcher = engine.credentials
        await watcher.poll()  # first read: the cursor
        alice, alice_link, _, bob_link = await _alice_and_bob(engine, sched, tokens)
        second = FakeLink()
        await engine.open_session(second, Hello(tokens["alice"], b"tablet"))
        alice_id = alice.user_id
        # What the CLI does: a change through the store only.
        await store.revoke_tokens(alice_id)
        await watcher.poll()
        for link in (alice_link, second):
            assert link.closed is not None
            assert link.closed[0] == CloseCode.AUTH_FAILED
        assert alice_id not in engine.registry.users()
        assert bob_link.closed is None
        await watcher.poll()  # nothing new: nothing more closed
        assert watcher.stats_closed == 2
    run(tmp_path, body)


def test_a_rename_closes_the_old_sessions_and_the_address_moves_to_its_new_owner(
        tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        watcher = engine.credentials
        await watcher.poll()
        alice, alice_link, _, _ = await _alice_and_bob(engine, sched, tokens)
        await store.rename_user(1, "alice", "alicia")
        carol = await store.create_user(1, "alice", engine.clock.wall_ms())
        await _token(store, engine, "alice", b"carol", HOUR_MS)
        # The new owner connects before the server has read the log.
        carol_link = FakeLink()
        await engine.open_session(carol_link, Hello(b"carol", b"c"))
        assert engine.registry.user_at((1, b"alice")) == carol.user_id
        await watcher.poll()
        assert alice_link.closed is not None
        assert alice_link.closed[0] == CloseCode.ADDRESS_CHANGED
        assert carol_link.closed is None
        # Closing the renamed user's session left the new owner's address alone.
        assert engine.registry.user_at((1, b"alice")) == carol.user_id
        assert alice.closed
    run(tmp_path, body)


def test_a_hello_in_flight_across_a_revocation_is_checked_again(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        watcher = engine.credentials
        await watcher.poll()
        read, gate = asyncio.Event(), asyncio.Event()
        original = store.authenticate

        async def held(hashed: bytes, device: bytes) -> Login | None:
            login = await original(hashed, device)
            read.set()
            await gate.wait()
            return login
        store.authenticate = held  # type: ignore[method-assign]
        link = FakeLink()
        hello = asyncio.get_running_loop().create_task(
            engine.open_session(link, Hello(tokens["alice"], b"a")))
        await read.wait()  # the HELLO read its token while it was still valid
        alice_id = await store.find_user(1, b"alice")
        assert alice_id is not None
        await store.revoke_tokens(alice_id)
        await watcher.poll()  # no session of alice yet: nothing to close
        gate.set()
        session = await hello
        await sched.settle()
        assert link.closed is not None
        assert link.closed[0] == CloseCode.AUTH_FAILED
        assert session.closed
    run(tmp_path, body)


def test_after_a_store_outage_every_live_session_is_checked_again(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        watcher = engine.credentials
        await watcher.poll()
        _, alice_link, _, bob_link = await _alice_and_bob(engine, sched, tokens)
        bob_id = await store.find_user(1, b"bob")
        assert bob_id is not None
        await store.revoke_tokens(bob_id)
        original = store.credential_changes

        failed = asyncio.Event()

        async def lost(after: int, limit: int) -> list[CredentialChange]:
            failed.set()
            raise StorageUnavailableError("MariaDB: Can't connect to server")
        store.credential_changes = lost  # type: ignore[method-assign]
        poll = asyncio.get_running_loop().create_task(watcher.run())
        try:
            await failed.wait()
            assert bob_link.closed is None  # the log cannot be read
            # Back, but the log no longer says it (pruned while away).
            store.credential_changes = (  # type: ignore[method-assign]
                lambda after, limit: original(10**12, limit))
            engine.clock.advance(1.0)  # type: ignore[attr-defined]
            for _ in range(200):
                if bob_link.closed is not None:
                    break
                await asyncio.sleep(0.01)
        finally:
            poll.cancel()
        assert bob_link.closed is not None
        assert bob_link.closed[0] == CloseCode.AUTH_FAILED
        assert alice_link.closed is None
    run(tmp_path, body)
