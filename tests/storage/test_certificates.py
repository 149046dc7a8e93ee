"""The storage contract of the ACME manager's state (issue 13): `CertificateStore`.

Every test runs on SQLite and on a real MariaDB server (the `backend`
fixture, tests/storage/conftest.py).  "Two processes" are two stores opened
on the same database, each with its own writer thread and connection: at
the database they are two clients, as two processes or nodes would be.
"""

from __future__ import annotations

import asyncio

import pytest

from appliance.errors import StorageError
from appliance.storage.interface import Storage
from appliance.storage.models import RenewalState, StoredCertificate
from appliance.storage.sql.store import SqlStorage
from tests.storage.conftest import Opener, run

NOW = 1_700_000_000_000
TTL = 60_000
ROUNDS = 20


def cert(name: str, fill: bytes, *, version: int = 0) -> StoredCertificate:
    # Every byte value, and more than a 64 KiB BLOB holds (MariaDB: MEDIUMBLOB).
    chain = bytes(range(256)) * 400 + fill
    return StoredCertificate(name, chain, b"\x00key\xff" + fill, "https://ca.test/dir",
                             NOW, NOW + 90 * 86_400_000, version)


async def directory_version(store: Storage) -> int:
    """The counter that every directory change raises (migration 0004)."""
    assert isinstance(store, SqlStorage)
    return await store._read(  # the store's own reader: no API exposes the counter
        lambda conn: int(conn.execute("SELECT version FROM directory_version").fetchone()[0]))


def test_certificates_round_trip_and_their_version_rises_by_one(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        assert await store.load_certificate("a.test") is None
        assert await store.certificate_version("a.test") == 0
        first = cert("a.test", b"one", version=99)  # the caller's version is ignored
        assert await store.save_certificate(first) == 1
        loaded = await store.load_certificate("a.test")
        assert loaded == StoredCertificate(first.name, first.fullchain_pem, first.key_pem,
                                           first.issuer, first.not_before_ms,
                                           first.not_after_ms, 1)
        assert await store.save_certificate(cert("a.test", b"two")) == 2
        assert await store.save_certificate(cert("a.test", b"two")) == 3  # even unchanged
        assert await store.certificate_version("a.test") == 3
        newest = await store.load_certificate("a.test")
        assert newest is not None
        assert newest.fullchain_pem.endswith(b"two")
        assert newest.key_pem == b"\x00key\xfftwo"
        assert newest.version == 3
        # Names are exact keys: others are untouched, and have versions of their own.
        assert await store.save_certificate(cert("a.test,b.test", b"ab")) == 1
        assert await store.certificate_version("A.TEST") == 0
        assert await store.certificate_version("a.test ") == 0
        assert await store.certificate_version("a.test") == 3
    run(backend, go)


def test_certificates_survive_a_reopen_and_versions_continue(backend: Opener) -> None:
    async def go() -> None:
        store = await backend()
        try:
            await store.save_certificate(cert("a.test", b"one"))
            await store.save_renewal_state(RenewalState("a.test", 2, NOW + 5, NOW, "rate limited"))
        finally:
            await store.close()
        store = await backend()
        try:
            loaded = await store.load_certificate("a.test")
            assert loaded is not None
            assert loaded.fullchain_pem == cert("a.test", b"one").fullchain_pem
            assert await store.save_certificate(cert("a.test", b"two")) == 2
            assert await store.renewal_state("a.test") == RenewalState("a.test", 2, NOW + 5, NOW,
                                                                       "rate limited")
        finally:
            await store.close()
    asyncio.run(go())


def test_renewal_state_defaults_to_zero_and_round_trips(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        assert await store.renewal_state("a.test") == RenewalState("a.test")
        failed = RenewalState("a.test", 3, NOW + 8 * TTL, NOW, "urn:ietf:params:acme:error:dns ✗")
        await store.save_renewal_state(failed)
        assert await store.renewal_state("a.test") == failed
        await store.save_renewal_state(failed)  # saved unchanged (MariaDB: 0 affected rows)
        assert await store.renewal_state("a.test") == failed
        await store.save_renewal_state(RenewalState("a.test", 0, 0, NOW + 1))  # a success
        assert await store.renewal_state("a.test") == RenewalState("a.test", 0, 0, NOW + 1)
        assert await store.renewal_state("b.test") == RenewalState("b.test")
        # A CA's whole error document is kept to its first 4,000 characters.
        await store.save_renewal_state(RenewalState("b.test", 1, 0, 0, "é" * 70_000))
        assert (await store.renewal_state("b.test")).last_error == "é" * 4000
    run(backend, go)


def test_a_lease_is_held_until_it_expires_or_its_holder_releases_it(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        assert await store.acquire_lease("acme", "node-a", NOW, TTL)
        assert not await store.acquire_lease("acme", "node-b", NOW + TTL - 1, TTL)
        # The holder refreshes it (also twice with the same times: nothing changes).
        assert await store.acquire_lease("acme", "node-a", NOW + 10, TTL)
        assert await store.acquire_lease("acme", "node-a", NOW + 10, TTL)
        assert not await store.acquire_lease("acme", "node-b", NOW + TTL, TTL)  # extended
        # The holder went quiet (crashed): once its lease ran out, another takes it.
        assert await store.acquire_lease("acme", "node-b", NOW + 10 + TTL, TTL)
        assert not await store.acquire_lease("acme", "node-a", NOW + 20 + TTL, TTL)
        # Owners are exact: no case folding, no trailing-space padding.
        assert not await store.acquire_lease("acme", "NODE-B", NOW + 20 + TTL, TTL)
        assert not await store.acquire_lease("acme", "node-b ", NOW + 20 + TTL, TTL)
        await store.release_lease("acme", "node-a")  # not the holder: nothing happens
        assert not await store.acquire_lease("acme", "node-a", NOW + 30 + TTL, TTL)
        await store.release_lease("acme", "node-b")
        assert await store.acquire_lease("acme", "node-a", NOW + 40 + TTL, TTL)
        # Leases are independent by name; releasing an unknown one is harmless.
        assert await store.acquire_lease("other", "node-b", NOW + 40 + TTL, TTL)
        await store.release_lease("never-taken", "node-a")
    run(backend, go)


@pytest.mark.parametrize(("name", "owner", "ttl"), [
    ("", "node-a", TTL), ("x" * 256, "node-a", TTL), ("acme", "", TTL),
    ("acme", "o" * 256, TTL), ("acme", "node-a", 0), ("acme", "node-a", -1),
    ("acme", "node-a", 2**63),
], ids=["empty name", "long name", "empty owner", "long owner", "zero ttl", "negative ttl",
        "ttl past 2**63"])
def test_lease_arguments_out_of_range_are_refused_typed(backend: Opener, name: str, owner: str,
                                                        ttl: int) -> None:
    async def go(store: Storage) -> None:
        with pytest.raises(StorageError, match="refused"):
            await store.acquire_lease(name, owner, NOW, ttl)
        # The writer is not left in a transaction; the limits themselves are fine.
        assert await store.acquire_lease("x" * 255, "o" * 255, NOW, TTL)
        await store.release_lease("x" * 255, "o" * 255)
        assert await store.acquire_lease("x" * 255, "another", NOW, TTL)
    run(backend, go)


def test_names_out_of_range_are_refused_typed(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        for name in ("", "n" * 256):
            with pytest.raises(StorageError, match="refused"):
                await store.save_certificate(cert(name, b""))
            with pytest.raises(StorageError, match="refused"):
                await store.save_renewal_state(RenewalState(name, 1))
            with pytest.raises(StorageError, match="refused"):
                await store.release_lease(name, "node-a")
        with pytest.raises(StorageError):  # a value no 64-bit column holds: typed too
            await store.save_renewal_state(RenewalState("a.test", 2**63))
        assert await store.save_certificate(cert("n" * 255, b"")) == 1
        assert await store.renewal_state("a.test") == RenewalState("a.test")
    run(backend, go)


def test_certificate_calls_leave_the_directory_version_alone(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        before = await directory_version(store)
        await store.save_certificate(cert("a.test", b"one"))
        await store.save_certificate(cert("a.test", b"two"))
        await store.load_certificate("a.test")
        await store.certificate_version("a.test")
        await store.save_renewal_state(RenewalState("a.test", 1, NOW, NOW, "failed"))
        await store.renewal_state("a.test")
        assert await store.acquire_lease("acme", "node-a", NOW, TTL)
        assert not await store.acquire_lease("acme", "node-b", NOW, TTL)
        await store.release_lease("acme", "node-a")
        with pytest.raises(StorageError):
            await store.acquire_lease("acme", "", NOW, TTL)
        assert await directory_version(store) == before
        await store.create_user(1, "alice", NOW)  # a directory change does raise it
        assert await directory_version(store) > before
    run(backend, go)


def test_two_processes_racing_for_a_lease_exactly_one_wins_each_round(backend: Opener) -> None:
    async def go() -> None:
        one = await backend(server=False)
        two = await backend(server=False)
        try:
            for i in range(ROUNDS):
                # Even rounds race to create the lease row; odd rounds race to
                # take over the previous round's lease, now expired.
                name = f"fresh-{i}" if i % 2 == 0 else "shared"
                now = NOW + i * 2 * TTL
                won = await asyncio.gather(one.acquire_lease(name, "one", now, TTL),
                                           two.acquire_lease(name, "two", now, TTL))
                assert sorted(won) == [False, True], (i, won)
                winner, loser = ((one, "one"), (two, "two")) if won[0] else ((two, "two"),
                                                                             (one, "one"))
                assert not await loser[0].acquire_lease(name, loser[1], now + 1, TTL)
                assert await winner[0].acquire_lease(name, winner[1], now + 1, TTL)
        finally:
            await one.close()
            await two.close()
    asyncio.run(go())


def test_two_processes_saving_at_once_get_distinct_versions(backend: Opener) -> None:
    async def go() -> None:
        one = await backend(server=False)
        two = await backend(server=False)
        try:
            for i in range(ROUNDS):
                name = f"race-{i // 2}"  # each name: a race to create it, then to replace it
                versions = await asyncio.gather(one.save_certificate(cert(name, b"one")),
                                                two.save_certificate(cert(name, b"two")))
                base = 2 * (i % 2)
                assert sorted(versions) == [base + 1, base + 2], (i, versions)
                assert await one.certificate_version(name) == base + 2
                newest = await two.load_certificate(name)
                assert newest is not None
                assert newest.version == base + 2
                last = b"one" if versions[0] > versions[1] else b"two"
                assert newest.fullchain_pem.endswith(last)  # the later save is the one kept
        finally:
            await one.close()
            await two.close()
    asyncio.run(go())


def test_an_operator_request_round_trips(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        asked = RenewalState("a.test", 2, NOW + TTL, NOW, "down", request=2, requested_ms=NOW)
        await store.save_renewal_state(asked)
        assert await store.renewal_state("a.test") == asked
    run(backend, go)


def test_challenge_answers_are_shared_until_withdrawn_or_expired(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        other = await backend(server=False)  # another process on the same database
        try:
            await store.save_challenge_answer("http-01:tok", b"tok.thumb", NOW + TTL, NOW)
            assert await other.challenge_answer("http-01:tok", NOW) == b"tok.thumb"
            assert await other.challenge_answer("http-01:tok", NOW + TTL) is None  # expired
            assert await other.challenge_answer("http-01:nope", NOW) is None
            await store.save_challenge_answer("http-01:tok", b"tok.new", NOW + TTL, NOW)
            assert await other.challenge_answer("http-01:tok", NOW) == b"tok.new"
            await store.drop_challenge_answer("http-01:tok")
            assert await other.challenge_answer("http-01:tok", NOW) is None
            with pytest.raises(StorageError):
                await store.save_challenge_answer("x", b"a" * 2000, NOW + TTL, NOW)
            # A later save sweeps expired answers.
            await store.save_challenge_answer("tls-alpn-01:a.test", b"k", NOW + 1, NOW)
            await store.save_challenge_answer("tls-alpn-01:b.test", b"k", NOW + TTL, NOW + 2)
            assert await store.challenge_answer("tls-alpn-01:a.test", NOW) is None
        finally:
            await other.close()
    run(backend, go)
