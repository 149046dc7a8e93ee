"""`SqlStorage`: the `Storage` interface over the shared SQL code, for every backend.

One writer thread with its own connection (every write, in group-commit
batches that the engine assembles) and reader threads with a connection
each (queue and directory reads).  The event loop never waits on the
database; it awaits futures that the threads complete.  Backends
(`appliance.storage.sqlite`, `appliance.storage.mariadb`) open the
connections and hand them over.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Generic, TypeVar

from appliance.errors import StorageError, StorageUnavailableError
from appliance.storage.models import (
    AppInfo,
    CredentialChange,
    DeviceRecord,
    GroupMember,
    GroupRoster,
    Login,
    Pending,
    Principal,
    Receipt,
    RenewalState,
    StoredCertificate,
    UserInfo,
    WriteBatch,
    WriteResult,
)
from appliance.storage.sql import admin, certificates, credentials, reads
from appliance.storage.sql.dialect import Connection
from appliance.storage.sql.filestore import SqlFileStore
from appliance.storage.sql.groupstore import SqlGroupStore
from appliance.storage.sql.writes import Writer

T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R")


class Coalesced(Generic[A, R]):
    """Calls that arrive while a job runs wait for it, then go together as the next one.

    `fn` takes the list of every queued argument and returns the results in
    the same order; an exception fails every call of that job.  At most
    `parallel` jobs run at once (one per store thread that can serve them):
    starting a job per loop turn instead gave a connect storm of new devices
    ~3 registrations per transaction, and its per-transaction cost
    (BEGIN, COMMIT, two thread hand-offs) twice the registrations' own.
    """

    def __init__(self, pool: ThreadPoolExecutor, fn: Callable[[list[A]], list[R]],
                 parallel: int = 1) -> None:
        self._pool = pool
        self._fn = fn
        self._parallel = parallel
        self._running = 0
        self._scheduled = False
        self._queued: list[tuple[A, asyncio.Future[R]]] = []

    async def call(self, arg: A) -> R:
        """Queue one call; its result comes from the next job."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queued.append((arg, future))
        if not self._scheduled and self._running < self._parallel:
            # The rest of this loop turn's calls join it.
            self._scheduled = True
            loop.call_soon(self._start, loop)
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        if not self._queued or self._running >= self._parallel:
            return
        batch, self._queued = self._queued, []
        self._running += 1
        job = loop.run_in_executor(self._pool, self._fn, [arg for arg, _ in batch])

        def settle(done: asyncio.Future[list[R]]) -> None:
            self._running -= 1
            if self._queued and not self._scheduled:
                self._start(loop)  # what queued meanwhile goes at once
            exc = done.exception()
            results = None if exc is not None else done.result()
            for i, (_, future) in enumerate(batch):
                if future.done():
                    continue  # its caller went away
                if results is None:
                    future.set_exception(exc)  # type: ignore[arg-type]
                else:
                    future.set_result(results[i])

        job.add_done_callback(settle)


class Readers:
    """Reader threads, each with a connection of its own, opened on first use.

    A connection whose call failed because the database went away is closed
    and opened afresh by the next call on that thread: reads recover by
    themselves when the database returns.
    """

    def __init__(self, connect: Callable[[], Connection], threads: int, name: str) -> None:
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._connect = connect
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[Connection] = []

    def run_here(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(conn, *args)` on the calling reader thread."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._lock:
                self._open.append(conn)
        try:
            return fn(conn, *args)
        except conn.errors as exc:
            error = conn.translate(exc)
            if isinstance(error, StorageUnavailableError):
                self._local.conn = None
                with self._lock:
                    self._open.remove(conn)
                conn.close()
            raise error from None
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - typed below, never leaked
            # A value the driver cannot bind (OverflowError, TypeError): a
            # typed error for the caller, never a library exception.
            raise StorageError(f"the store refused a value: {type(exc).__name__}: {exc}"
                               ) from None

    def run_apart(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(conn, *args)` on a connection of its own, closed afterwards: a rare,
        slower read (the metrics' count) never holds up a reader thread's work."""
        try:
            conn = self._connect()
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - typed, never leaked
            raise StorageUnavailableError(f"cannot connect: {type(exc).__name__}") from None
        try:
            return fn(conn, *args)
        except conn.errors as exc:
            raise conn.translate(exc) from None
        finally:
            conn.close()

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(conn, *args)` on a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, partial(self.run_here, fn, *args))

    def close(self) -> None:
        """Close every connection (the threads must be idle) and the pool."""
        self.pool.shutdown()
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            conn.close()


class SqlStorage(SqlGroupStore, SqlFileStore):
    """The `Storage` interface on one SQL database (groups from `SqlGroupStore`, `FileStore`
    from `SqlFileStore`)."""

    def __init__(self, writer: Writer, wpool: ThreadPoolExecutor, readers: Readers) -> None:
        self._writer = writer
        self._wpool = wpool
        self._readers = readers

        def logins(requests: list[tuple[bytes, bytes]]) -> list[Login | None]:
            return readers.run_here(
                lambda conn: [reads.authenticate(conn, *req) for req in requests])

        self._logins: Coalesced[tuple[bytes, bytes], Login | None] = Coalesced(
            readers.pool, logins, parallel=readers.threads)
        self._registrations: Coalesced[tuple[int, bytes, int, int], DeviceRecord] = Coalesced(
            wpool, writer.register_devices)

    async def _write(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._wpool, fn)

    async def _read(self, fn: Callable[..., T], *args: object) -> T:
        return await self._readers.call(fn, *args)

    async def _admin(self, fn: Callable[..., T], *args: object) -> T:
        return await self._write(partial(self._writer.run_admin, fn, *args))

    async def _meta(self, fn: Callable[..., T], *args: object, durable: bool = True) -> T:
        return await self._write(partial(self._writer.run_meta, fn, *args, durable=durable))

    @property
    def file_retention_ms(self) -> int:
        """See `FileStore.file_retention_ms`."""
        return self._writer.file_retention_ms

    @file_retention_ms.setter
    def file_retention_ms(self, value: int) -> None:
        if not 0 <= value < 2**62:
            raise StorageError(f"the store refused a file retention of {value} ms")
        self._writer.file_retention_ms = value

    # --- MessageStore -----------------------------------------------------

    async def write(self, batch: WriteBatch, now_ms: int) -> WriteResult:
        """See `MessageStore.write`."""
        return await self._write(partial(self._writer.apply, batch, now_ms))

    async def pending(self, device_rowid: int, user_id: int, now_ms: int, limit: int,
                      exclude: frozenset[int] = frozenset()) -> list[Pending]:
        """See `MessageStore.pending`."""
        return await self._read(reads.pending, device_rowid, user_id, now_ms, limit, exclude)

    async def pending_receipts(self, user_id: int, after_seq: int, limit: int,
                               device_rowid: int = 0) -> list[Receipt]:
        """See `MessageStore.pending_receipts`."""
        return await self._read(reads.pending_receipts, user_id, after_seq, limit, device_rowid)

    async def sweep(self, now_ms: int, retention_ms: int) -> list[Receipt]:
        """See `MessageStore.sweep`."""
        return await self._write(partial(self._writer.sweep, now_ms, retention_ms))

    async def count_deliveries(self, limit: int) -> int:
        """See `MessageStore.count_deliveries`."""
        # A thread and a connection of its own: on SQLite the one reader thread
        # also serves every HELLO and queue read.
        return await asyncio.get_running_loop().run_in_executor(
            None, partial(self._readers.run_apart, reads.count_deliveries, limit))

    # --- DirectoryStore ---------------------------------------------------

    async def authenticate(self, token_hash: bytes, device_id: bytes) -> Login | None:
        """See `DirectoryStore.authenticate`.

        HELLOs that arrive in the same loop turn are looked up in one trip to
        the reader thread: a thread hop per HELLO costs more in GIL hand-offs
        than the queries themselves.
        """
        return await self._logins.call((token_hash, device_id))

    async def register_device(self, user_id: int, device_id: bytes, now_ms: int,
                              stale_before_ms: int) -> DeviceRecord:
        """See `DirectoryStore.register_device`.

        Registrations that arrive together share one transaction (a connect
        storm of new devices would otherwise pay one fsync each).
        """
        return await self._registrations.call((user_id, device_id, now_ms, stale_before_ms))

    async def find_user(self, app_id: int, address: bytes) -> int | None:
        """See `DirectoryStore.find_user`."""
        return await self._read(reads.find_user, app_id, address)

    async def group_members(self, app_id: int, group_id: int) -> list[GroupMember] | None:
        """See `DirectoryStore.group_members`."""
        return await self._read(reads.group_members, app_id, group_id)

    async def group_roster(self, app_id: int, group_id: int) -> GroupRoster | None:
        """See `DirectoryStore.group_roster`."""
        return await self._read(reads.group_roster, app_id, group_id)

    async def user_address(self, user_id: int) -> bytes | None:
        """See `DirectoryStore.user_address`."""
        return await self._read(reads.user_address, user_id)

    # --- AdminStore -------------------------------------------------------

    async def app_id(self, name: str) -> int:
        """See `AdminStore.app_id`."""
        return await self._read(admin.app_id, name)

    async def create_app(self, name: str, now_ms: int) -> AppInfo:
        """See `AdminStore.create_app`."""
        return await self._admin(admin.create_app, name, now_ms)

    async def list_apps(self) -> list[AppInfo]:
        """See `AdminStore.list_apps`."""
        return await self._read(admin.list_apps)

    async def store_app_secret(self, app_id: int, secret_hash: bytes, now_ms: int,
                               replace: bool) -> None:
        """See `AdminStore.store_app_secret`."""
        await self._admin(admin.store_app_secret, app_id, secret_hash, now_ms, replace)

    async def app_for_secret(self, secret_hash: bytes) -> AppInfo | None:
        """See `AdminStore.app_for_secret`."""
        return await self._read(admin.app_for_secret, secret_hash)

    async def store_operator_key(self, key_hash: bytes, now_ms: int) -> None:
        """See `AdminStore.store_operator_key`."""
        await self._admin(admin.store_operator_key, key_hash, now_ms)

    async def is_operator_key(self, key_hash: bytes) -> bool:
        """See `AdminStore.is_operator_key`."""
        return await self._read(admin.is_operator_key, key_hash)

    async def rename_user(self, app_id: int, address: str, new_address: str) -> UserInfo:
        """See `AdminStore.rename_user`."""
        return await self._admin(admin.rename_user, app_id, address, new_address)

    async def create_user(self, app_id: int, address: str, now_ms: int) -> UserInfo:
        """See `AdminStore.create_user`."""
        return await self._admin(admin.create_user, app_id, address, now_ms)

    async def delete_user(self, app_id: int, address: str) -> None:
        """See `AdminStore.delete_user`."""
        await self._admin(admin.delete_user, app_id, address, self.clock_ms())
        # Its queue went with it: the apps' queue usage is counted again.
        await self._write(self._writer.usage.forget_apps)

    async def list_users(self, app_id: int, after: str, limit: int) -> list[UserInfo]:
        """See `AdminStore.list_users`."""
        return await self._read(admin.list_users, app_id, after, limit)

    async def store_token(self, user_id: int, token_hash: bytes, expires_ms: int,
                          now_ms: int) -> None:
        """See `AdminStore.store_token`."""
        await self._admin(admin.store_token, user_id, token_hash, expires_ms, now_ms)

    async def revoke_tokens(self, user_id: int) -> int:
        """See `AdminStore.revoke_tokens`."""
        return await self._admin(admin.revoke_tokens, user_id)

    # --- CredentialStore --------------------------------------------------

    async def latest_credential_change(self) -> int:
        """See `CredentialStore.latest_credential_change`."""
        return await self._read(credentials.latest_change)

    async def credential_changes(self, after: int, limit: int) -> list[CredentialChange]:
        """See `CredentialStore.credential_changes`."""
        return await self._read(credentials.changes_after, after, limit)

    async def token_owners(self, token_hashes: Sequence[bytes]) -> dict[bytes, Principal]:
        """See `CredentialStore.token_owners`."""
        return await self._read(credentials.token_owners, token_hashes)

    # --- CertificateStore -------------------------------------------------

    async def load_certificate(self, name: str) -> StoredCertificate | None:
        """See `CertificateStore.load_certificate`."""
        return await self._read(certificates.load_certificate, name)

    async def certificate_version(self, name: str) -> int:
        """See `CertificateStore.certificate_version`."""
        return await self._read(certificates.certificate_version, name)

    async def save_certificate(self, cert: StoredCertificate) -> int:
        """See `CertificateStore.save_certificate`.

        Raises:
            StorageError: also for a name of more than 255 characters.
        """
        return await self._meta(certificates.save_certificate, cert)

    async def renewal_state(self, name: str) -> RenewalState:
        """See `CertificateStore.renewal_state`."""
        return await self._read(certificates.renewal_state, name)

    async def save_renewal_state(self, state: RenewalState) -> None:
        """See `CertificateStore.save_renewal_state`.

        `last_error` is kept to its first 4,000 characters.

        Raises:
            StorageError: also for a name of more than 255 characters.
        """
        await self._meta(certificates.save_renewal_state, state)

    async def acquire_lease(self, name: str, owner: str, now_ms: int, ttl_ms: int) -> bool:
        """See `CertificateStore.acquire_lease`.

        Raises:
            StorageError: also for an empty name or owner, one of more than
                255 characters, or `ttl_ms` not positive.
        """
        return await self._meta(certificates.acquire_lease, name, owner, now_ms, ttl_ms)

    async def release_lease(self, name: str, owner: str) -> None:
        """See `CertificateStore.release_lease`."""
        await self._meta(certificates.release_lease, name, owner)

    async def save_challenge_answer(self, name: str, answer: bytes, expires_ms: int,
                                    now_ms: int) -> None:
        """See `CertificateStore.save_challenge_answer`."""
        await self._meta(certificates.save_challenge_answer, name, answer, expires_ms, now_ms)

    async def challenge_answer(self, name: str, now_ms: int) -> bytes | None:
        """See `CertificateStore.challenge_answer`."""
        return await self._read(certificates.challenge_answer, name, now_ms)

    async def drop_challenge_answer(self, name: str) -> None:
        """See `CertificateStore.drop_challenge_answer`."""
        await self._meta(certificates.drop_challenge_answer, name)

    async def close(self) -> None:
        """Close every connection after the work already queued has run."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._wpool, self._writer.conn.close)
        self._wpool.shutdown()
        await loop.run_in_executor(None, self._readers.close)
