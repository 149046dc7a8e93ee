"""`PresenceStore` on SQLite and a real MariaDB: last seen, privacy, contacts, blocks.

Attacks first: another app's users are never found, blocked or listed; a
hidden user reads like no user; a resend of a message stored before a block
still gets its stored status; the writer refuses a blocked 1:1 message and
skips blocking members of a group, and forgets both once unblocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from appliance.errors import ConflictError, NotFoundError, StorageError
from appliance.protocol.wire.constants import Status
from appliance.storage.interface import Storage
from appliance.storage.models import NewMessage, Outcome, Perm, Privacy, WriteBatch
from appliance.storage.sql import presence as sql_presence
from tests.storage.conftest import Opener

NOW = 1_700_000_000_000
APP = 1


def run(backend: Opener, fn: Callable[[Storage], Awaitable[None]]) -> None:
    async def main() -> None:
        store = await backend()
        try:
            await fn(store)
        finally:
            await store.close()
    asyncio.run(main())


async def users(store: Storage, *names: str, app: int = APP) -> list[int]:
    return [(await store.create_user(app, name, NOW)).user_id for name in names]


async def other_app(store: Storage) -> int:
    await store.create_app("other", NOW)
    return await store.app_id("other")


def message(sender: int, device: int, msg_id: int, peer: bytes = b"", group: int = 0
            ) -> NewMessage:
    return NewMessage(APP, sender, device, msg_id, peer, group, 0, NOW + 60_000, 0, 0, 0, b"hi")


async def send(store: Storage, m: NewMessage) -> tuple[Outcome, int, tuple[int, ...]]:
    (accepted,) = (await store.write(WriteBatch(messages=[m]), NOW)).accepted
    return accepted.outcome, accepted.status, accepted.targets


# --- attacks: nothing crosses apps ----------------------------------------------------


def test_presence_never_resolves_an_address_of_another_app(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        (alice,) = await users(store, "alice")
        theirs = await other_app(store)
        (mallory,) = await users(store, "mallory", app=theirs)
        (twin,) = await users(store, "alice", app=theirs)
        assert await store.presence_of(theirs, mallory, [b"bob"]) == [None]
        (seen,) = await store.presence_of(theirs, mallory, [b"alice"])
        assert seen is not None
        assert seen.user_id == twin != alice
        (mine,) = await store.presence_of(APP, None, [b"mallory"])
        assert mine is None
    run(backend, go)


def test_contacts_and_blocks_take_addresses_of_the_users_app_only(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        (alice,) = await users(store, "alice")
        theirs = await other_app(store)
        (mallory,) = await users(store, "mallory", app=theirs)
        with pytest.raises(NotFoundError):
            await store.set_block(APP, alice, b"mallory", True, NOW)
        with pytest.raises(NotFoundError):  # alice is no user of that app
            await store.set_block(theirs, alice, b"mallory", True, NOW)
        assert await store.set_contacts(APP, alice, [b"mallory"]) == [b"mallory"]
        assert await store.contacts(APP, alice) == []
        with pytest.raises(NotFoundError):
            await store.contacts(theirs, alice)
        with pytest.raises(NotFoundError):
            await store.set_privacy(theirs, alice, Privacy.NOBODY)
        with pytest.raises(NotFoundError):
            await store.blocks(APP, mallory)
    run(backend, go)


def test_a_hidden_user_has_no_last_seen_for_the_viewer_to_read(backend: Opener) -> None:
    """The store says `visible=False`; the engine shows it as an unknown address."""
    async def go(store: Storage) -> None:
        alice, bob = await users(store, "alice", "bob")
        await store.write(WriteBatch(last_seen={alice: NOW}), NOW)
        await store.set_privacy(APP, alice, Privacy.NOBODY)
        (seen,) = await store.presence_of(APP, bob, [b"alice"])
        assert seen is not None
        assert not seen.visible
        (own,) = await store.presence_of(APP, alice, [b"alice"])
        assert own is not None
        assert own.visible
        assert own.last_seen_ms == NOW
        (app_view,) = await store.presence_of(APP, None, [b"alice"])
        assert app_view is not None
        assert app_view.visible
    run(backend, go)


def test_a_user_cannot_block_itself_nor_an_unknown_address(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        (alice,) = await users(store, "alice")
        with pytest.raises(StorageError):
            await store.set_block(APP, alice, b"alice", True, NOW)
        with pytest.raises(NotFoundError):
            await store.set_block(APP, alice, b"nobody", True, NOW)
        with pytest.raises(StorageError):
            await store.set_privacy(APP, alice, 7)
        assert await store.blocks(APP, alice) == []
    run(backend, go)


def test_blocks_per_user_are_bounded(backend: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql_presence, "MAX_BLOCKS", 2)

    async def go(store: Storage) -> None:
        alice, *_ = await users(store, "alice", "b1", "b2", "b3")
        assert await store.set_block(APP, alice, b"b1", True, NOW)
        assert await store.set_block(APP, alice, b"b2", True, NOW)
        with pytest.raises(ConflictError):
            await store.set_block(APP, alice, b"b3", True, NOW)
        assert await store.blocks(APP, alice) == [b"b1", b"b2"]
    run(backend, go)


# --- privacy and contacts -------------------------------------------------------------


def test_privacy_everyone_contacts_nobody(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob, carol = await users(store, "alice", "bob", "carol")
        assert await store.privacy(APP, alice) is Privacy.EVERYONE
        assert await store.presence_viewers(alice, [bob, carol]) == {bob, carol}
        assert await store.set_contacts(APP, alice, [b"bob", b"nobody", b"bob"]) == [b"nobody"]
        assert await store.contacts(APP, alice) == [b"bob"]
        await store.set_privacy(APP, alice, Privacy.CONTACTS)
        assert await store.privacy(APP, alice) is Privacy.CONTACTS
        assert await store.presence_viewers(alice, [bob, carol, alice]) == {bob, alice}
        seen = await store.presence_of(APP, carol, [b"alice", b"bob"])
        assert [r.visible if r else None for r in seen] == [False, True]
        await store.set_privacy(APP, alice, Privacy.NOBODY)
        assert await store.presence_viewers(alice, [bob, carol]) == set()
        await store.set_contacts(APP, alice, [])
        assert await store.contacts(APP, alice) == []
    run(backend, go)


def test_changes_are_logged_under_the_changed_user(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, _ = await users(store, "alice", "bob")
        start = await store.latest_credential_change()
        await store.set_privacy(APP, alice, Privacy.CONTACTS)
        await store.set_contacts(APP, alice, [b"bob"])
        assert await store.set_block(APP, alice, b"bob", True, NOW)
        assert not await store.set_block(APP, alice, b"bob", True, NOW)  # no change, no log
        assert await store.set_block(APP, alice, b"bob", False, NOW)
        changes = await store.credential_changes(start, 100)
        assert [(c.app_id, c.user_id) for c in changes] == [(APP, alice)] * 4
    run(backend, go)


def test_last_seen_is_written_by_the_group_commit(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob = await users(store, "alice", "bob")
        (before,) = await store.presence_of(APP, bob, [b"alice"])
        assert before is not None
        assert before.last_seen_ms == 0
        await store.write(WriteBatch(last_seen={alice: NOW - NOW % 60_000, 999_999: NOW}), NOW)
        (after,) = await store.presence_of(APP, bob, [b"alice"])
        assert after is not None
        assert after.last_seen_ms == NOW - NOW % 60_000
    run(backend, go)


def test_deleting_a_user_forgets_its_contacts_and_blocks_both_ways(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob = await users(store, "alice", "bob")
        await store.set_contacts(APP, alice, [b"bob"])
        await store.set_contacts(APP, bob, [b"alice"])
        await store.set_block(APP, alice, b"bob", True, NOW)
        await store.set_block(APP, bob, b"alice", True, NOW)
        await store.delete_user(APP, "bob")
        assert await store.contacts(APP, alice) == []
        assert await store.blocks(APP, alice) == []
        assert await store.blocks_of([alice, bob]) == {alice: frozenset(), bob: frozenset()}
    run(backend, go)


# --- blocks on the message path ---------------------------------------------------------


def test_blocks_of_reads_every_users_blocks(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob, carol = await users(store, "alice", "bob", "carol")
        await store.set_block(APP, alice, b"bob", True, NOW)
        await store.set_block(APP, alice, b"carol", True, NOW)
        await store.set_block(APP, carol, b"alice", True, NOW)
        assert await store.blocks_of([alice, bob, carol]) == {
            alice: frozenset({bob, carol}), bob: frozenset(), carol: frozenset({alice})}
        assert await store.blocks(APP, alice) == [b"bob", b"carol"]
    run(backend, go)


def test_the_writer_refuses_a_blocked_one_to_one_message_until_unblocked(
        backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob = await users(store, "alice", "bob")
        a_dev = (await store.register_device(alice, b"a", NOW, 0)).device_rowid
        b_dev = (await store.register_device(bob, b"b", NOW, 0)).device_rowid
        assert (await send(store, message(alice, a_dev, 1, b"bob")))[0] is Outcome.STORED
        await store.set_block(APP, bob, b"alice", True, NOW)
        assert (await send(store, message(alice, a_dev, 2, b"bob")))[:2] == (
            Outcome.REJECTED, Status.BLOCKED)
        # The other way round is not blocked.
        assert (await send(store, message(bob, b_dev, 1, b"alice")))[0] is Outcome.STORED
        await store.set_block(APP, bob, b"alice", False, NOW)
        assert (await send(store, message(alice, a_dev, 3, b"bob")))[0] is Outcome.STORED
    run(backend, go)


def test_a_resend_of_a_message_stored_before_the_block_gets_its_stored_status(
        backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, _ = await users(store, "alice", "bob")
        device = (await store.register_device(alice, b"a", NOW, 0)).device_rowid
        first = await send(store, message(alice, device, 41, b"bob"))
        assert first[:2] == (Outcome.STORED, Status.SENT)
        await store.set_block(APP, (await store.find_user(APP, b"bob")) or 0, b"alice", True,
                              NOW)
        again = await send(store, message(alice, device, 41, b"bob"))
        assert again[:2] == (Outcome.DUPLICATE, Status.SENT)
        # The same id in one batch with a new blocked one: each gets its own answer.
        batch = WriteBatch(messages=[message(alice, device, 41, b"bob"),
                                     message(alice, device, 42, b"bob")])
        answers = (await store.write(batch, NOW)).accepted
        assert [(a.outcome, a.status) for a in answers] == [
            (Outcome.DUPLICATE, Status.SENT), (Outcome.REJECTED, Status.BLOCKED)]
    run(backend, go)


def test_a_group_message_skips_the_members_who_block_its_sender(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob, carol = await users(store, "alice", "bob", "carol")
        devices = {u: (await store.register_device(u, b"d", NOW, 0)).device_rowid
                   for u in (alice, bob, carol)}
        group = await store.create_group(APP, "g", NOW)
        for user in (alice, bob, carol):
            await store.set_member(APP, group.group_id, user, Perm.DEFAULT)
        await store.set_block(APP, carol, b"alice", True, NOW)
        outcome, status, targets = await send(
            store, message(alice, devices[alice], 1, group=group.group_id))
        assert (outcome, status) == (Outcome.STORED, Status.SENT)
        assert set(targets) == {devices[bob]}
        # Carol's own messages still reach alice: a block is one way.
        outcome, _, targets = await send(store, message(carol, devices[carol], 1,
                                                        group=group.group_id))
        assert set(targets) == {devices[alice], devices[bob]}
        await store.set_block(APP, carol, b"alice", False, NOW)
        _, _, targets = await send(store, message(alice, devices[alice], 2,
                                                  group=group.group_id))
        assert set(targets) == {devices[bob], devices[carol]}
    run(backend, go)


def test_another_process_blocking_reaches_this_writers_cache(backend: Opener) -> None:
    """The CLI (another process) blocks: the server's writer, which cached the pair as
    unblocked, refuses the next message (the directory version says its cache is stale)."""
    async def go(store: Storage) -> None:
        alice, bob = await users(store, "alice", "bob")
        device = (await store.register_device(alice, b"a", NOW, 0)).device_rowid
        assert (await send(store, message(alice, device, 1, b"bob")))[0] is Outcome.STORED
        other = await backend(server=False)
        try:
            await other.set_block(APP, bob, b"alice", True, NOW)
        finally:
            await other.close()
        assert (await send(store, message(alice, device, 2, b"bob")))[1] == Status.BLOCKED
    run(backend, go)
