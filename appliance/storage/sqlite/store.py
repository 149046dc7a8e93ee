"""`SqliteStorage`: the embedded default backend (SPEC M14).

Two threads, each with its own connection: the writer (every write, in
group-commit batches that the engine assembles) and the reader (queue and
directory reads).  The event loop never waits on SQLite; it awaits futures
that the threads complete.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Generic, TypeVar

from appliance.errors import StorageError, StorageUnavailableError
from appliance.storage.models import (
    AppInfo,
    DeviceRecord,
    GroupInfo,
    GroupMember,
    Login,
    Pending,
    Receipt,
    UserInfo,
    WriteBatch,
    WriteResult,
)
from appliance.storage.sqlite import admin, reads
from appliance.storage.sqlite.connection import migrate, open_connection, translate
from appliance.storage.sqlite.writes import Writer

T = TypeVar("T")
log = logging.getLogger(__name__)
_CHECKPOINT_INTERVAL_S = 0.5
A = TypeVar("A")
R = TypeVar("R")


class Coalesced(Generic[A, R]):
    """Calls that arrive in one loop turn run as one job on a store thread.

    `fn` takes the list of every queued argument and returns the results in
    the same order; an exception fails every call of that job.
    """

    def __init__(self, pool: ThreadPoolExecutor, fn: Callable[[list[A]], list[R]]) -> None:
        self._pool = pool
        self._fn = fn
        self._queued: list[tuple[A, asyncio.Future[R]]] = []

    async def call(self, arg: A) -> R:
        """Queue one call; its result comes from the next job."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queued.append((arg, future))
        if len(self._queued) == 1:
            loop.call_soon(self._start, loop)
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._queued = self._queued, []
        job = loop.run_in_executor(self._pool, self._fn, [arg for arg, _ in batch])

        def settle(done: asyncio.Future[list[R]]) -> None:
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


class SqliteStorage:
    """The `Storage` interface on one SQLite file."""

    def __init__(self, writer: Writer, reader: sqlite3.Connection, wpool: ThreadPoolExecutor,
                 rpool: ThreadPoolExecutor) -> None:
        self._writer = writer
        self._reader = reader
        self._wpool = wpool
        self._rpool = rpool
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        def logins(requests: list[tuple[bytes, bytes]]) -> list[Login | None]:
            try:
                return [reads.authenticate(reader, *req) for req in requests]
            except sqlite3.Error as exc:
                raise translate(exc) from None

        self._logins: Coalesced[tuple[bytes, bytes], Login | None] = Coalesced(rpool, logins)
        self._registrations: Coalesced[tuple[int, bytes, int, int], DeviceRecord] = Coalesced(
            wpool, writer.register_devices)

    @classmethod
    async def open(cls, path: Path, now_ms: int) -> SqliteStorage:
        """Open (creating and migrating as needed) the database at `path`.

        Raises:
            StorageUnavailableError: the file cannot be opened.
            StorageError: the schema cannot be migrated.
        """
        loop = asyncio.get_running_loop()
        wpool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        rpool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")

        def setup() -> Writer:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageUnavailableError(
                    f"cannot create data directory {path.parent}: {exc.strerror}") from None
            conn = open_connection(path)
            migrate(conn, now_ms)
            return Writer(conn)

        try:
            writer = await loop.run_in_executor(wpool, setup)
            reader = await loop.run_in_executor(rpool, open_connection, path)
        except BaseException:
            wpool.shutdown()
            rpool.shutdown()
            raise
        store = cls(writer, reader, wpool, rpool)
        store.start_checkpoints(path)
        return store

    def start_checkpoints(self, path: Path) -> None:
        """Checkpoint the WAL from a thread of its own.

        With the writer's automatic checkpoints, every ~1,000 pages one commit
        would also copy the WAL into the database and fsync it, a latency
        spike on the SENT path; a PASSIVE checkpoint from another connection
        never blocks the writer.
        """
        self._writer.conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._stop_checkpoints = threading.Event()
        stop = self._stop_checkpoints

        def loop() -> None:
            conn = open_connection(path)
            try:
                while not stop.wait(_CHECKPOINT_INTERVAL_S):
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    except sqlite3.Error as exc:
                        log.warning("WAL checkpoint failed: %s", exc)
            finally:
                conn.close()

        self._checkpointer = threading.Thread(target=loop, name="sqlite-checkpoint", daemon=True)
        self._checkpointer.start()

    async def _write(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._wpool, fn)

    async def _read(self, fn: Callable[..., T], *args: object) -> T:
        def call() -> T:
            try:
                return fn(self._reader, *args)
            except sqlite3.Error as exc:
                raise translate(exc) from None

        return await asyncio.get_running_loop().run_in_executor(self._rpool, call)

    async def _admin(self, fn: Callable[..., T], *args: object) -> T:
        writer = self._writer

        def call() -> T:
            conn = writer.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = fn(conn, *args)
                conn.execute("COMMIT")
                return result
            except (sqlite3.Error, StorageError) as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise translate(exc) from None
                raise
            finally:
                writer._clear_caches()

        return await self._write(call)

    # --- MessageStore -----------------------------------------------------

    async def write(self, batch: WriteBatch, now_ms: int) -> WriteResult:
        """See `MessageStore.write`."""
        return await self._write(partial(self._writer.apply, batch, now_ms))

    async def pending(self, device_rowid: int, user_id: int, now_ms: int, limit: int,
                      exclude: frozenset[int] = frozenset()) -> list[Pending]:
        """See `MessageStore.pending`."""
        return await self._read(reads.pending, device_rowid, user_id, now_ms, limit, exclude)

    async def pending_receipts(self, user_id: int, after_seq: int, limit: int) -> list[Receipt]:
        """See `MessageStore.pending_receipts`."""
        return await self._read(reads.pending_receipts, user_id, after_seq, limit)

    async def sweep(self, now_ms: int, retention_ms: int) -> list[Receipt]:
        """See `MessageStore.sweep`."""
        return await self._write(partial(self._writer.sweep, now_ms, retention_ms))

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
        await self._admin(admin.delete_user, app_id, address)

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

    async def create_group(self, app_id: int, name: str, now_ms: int) -> GroupInfo:
        """See `AdminStore.create_group`."""
        return await self._admin(admin.create_group, app_id, name, now_ms)

    async def delete_group(self, app_id: int, group_id: int) -> None:
        """See `AdminStore.delete_group`."""
        await self._admin(admin.delete_group, app_id, group_id)

    async def set_member(self, app_id: int, group_id: int, user_id: int, perms: int) -> None:
        """See `AdminStore.set_member`."""
        await self._admin(admin.set_member, app_id, group_id, user_id, perms)

    async def remove_member(self, app_id: int, group_id: int, user_id: int) -> None:
        """See `AdminStore.remove_member`."""
        await self._admin(admin.remove_member, app_id, group_id, user_id)

    async def get_group(self, app_id: int, group_id: int) -> GroupInfo:
        """See `AdminStore.get_group`."""
        return await self._read(admin.get_group, app_id, group_id)

    async def list_groups(self, app_id: int) -> list[GroupInfo]:
        """See `AdminStore.list_groups`."""
        return await self._read(admin.list_groups, app_id)

    async def close(self) -> None:
        """Close both connections after the work already queued has run."""
        loop = asyncio.get_running_loop()
        if self._checkpointer is not None:
            self._stop_checkpoints.set()
            await loop.run_in_executor(None, self._checkpointer.join)
        await loop.run_in_executor(self._wpool, self._writer.conn.close)
        await loop.run_in_executor(self._rpool, self._reader.close)
        self._wpool.shutdown()
        self._rpool.shutdown()
