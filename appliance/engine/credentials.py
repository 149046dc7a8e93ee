"""Live credentials: a session lasts only as long as the token that opened it.

HELLO checks the token once (SPEC M1); this module keeps checking it for as
long as the session is open (issue 12, finding 5, PROTOCOL.md §5.1):

* Expiry: every session's token expiry sits in a heap; the watcher closes
  a session with TOKEN_EXPIRED when its expiry passes.  Nothing is done per
  message.
* Revocation, deletion, rename: the store logs them in the transaction that
  makes them, whichever process makes them (the REST API in this process,
  the ``tidings`` command line in another).  The watcher reads the log past
  its cursor every ``limits.credentials_poll_s`` (one indexed read), then
  checks the tokens of the live sessions of the users named there with one
  query per 500 sessions, never one per session; a token gone means revoked
  or deleted (AUTH_FAILED), another address means renamed (ADDRESS_CHANGED).
  Changes made through this process's admin service are also passed in
  directly (`users_changed`), so a REST call returns after the sessions are
  closed.
* App secrets: a replaced secret must stop REST calls at once; the log says
  which app's secrets changed and `secrets_changed` drops the REST API's
  cache.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from appliance.engine.session import Session
from appliance.errors import StorageError
from appliance.protocol.wire import CloseCode

if TYPE_CHECKING:
    from appliance.engine.core import Engine

log = logging.getLogger(__name__)

#: Log rows read per query; a longer backlog is read in several.
_CHANGES_PER_READ = 1000
#: The expiry heap is rebuilt without closed sessions once it holds this many
#: more entries than twice the live sessions (connect/close churn would
#: otherwise keep every closed session of a long-lived token in it).
_HEAP_SLACK = 1024


class CredentialWatcher:
    """Closes live sessions whose credentials were revoked, expired or changed."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        #: A heap of sessions ordered by their token's expiry (`Session.__lt__`).
        self._expiries: list[Session] = []
        #: The version of the last logged change handled; None until read.
        self._cursor: int | None = None
        #: Raised whenever sessions are re-checked: a HELLO in flight across a
        #: re-check is checked again once registered (`track`).
        self.generation = 0
        #: Set after a failed read of the log: once the store answers again,
        #: every live session is re-checked (the log may have been pruned).
        self._recheck_all = False
        #: Called with the app id when an app's secrets were replaced.
        self.secrets_changed: Callable[[int], None] | None = None
        #: Called when users' tokens were revoked, or users deleted or renamed: the
        #: REST API's cache of access tokens (files, previews) is dropped.
        self.tokens_changed: Callable[[], None] | None = None
        self.stats_closed = 0

    # --- sessions --------------------------------------------------------------------

    def track(self, session: Session, generation: int) -> None:
        """A session was opened; `generation` is what it was when its HELLO was read."""
        heapq.heappush(self._expiries, session)
        if generation != self.generation:
            # Its token was read before a re-check that could not see it yet.
            self._engine.scheduler.spawn(self._recheck((session.user_id,)),
                                         name="credentials-recheck")

    def expire(self, now_ms: int) -> int:
        """Close the sessions whose token expired by `now_ms`; return how many."""
        heap = self._expiries
        closed = 0
        while heap and heap[0].token_expires_ms <= now_ms:
            session = heapq.heappop(heap)
            if not session.closed:
                self._end(session, CloseCode.TOKEN_EXPIRED, "access token expired")
                closed += 1
        if len(heap) > 2 * len(self._engine.registry) + _HEAP_SLACK:
            self._expiries = [s for s in heap if not s.closed]
            heapq.heapify(self._expiries)
        return closed

    def next_expiry_ms(self) -> int | None:
        """The earliest token expiry among tracked sessions, if any."""
        return self._expiries[0].token_expires_ms if self._expiries else None

    # --- changes -----------------------------------------------------------------------

    async def poll(self) -> None:
        """Read the change log past the cursor and act on it.

        Raises:
            StorageError: the store cannot be read (the cursor stays).
        """
        store = self._engine.store
        if self._cursor is None:
            # Sessions opened from now on are checked against what is stored
            # now; nothing logged before can concern them.
            self._cursor = await store.latest_credential_change()
            return
        users: set[int] = set()
        apps: set[int] = set()
        while True:
            changes = await store.credential_changes(self._cursor, _CHANGES_PER_READ)
            for change in changes:
                if change.user_id is None:
                    apps.add(change.app_id)
                else:
                    users.add(change.user_id)
            if changes:
                self._cursor = changes[-1].version
            if len(changes) < _CHANGES_PER_READ:
                break
        if self._recheck_all:
            users.update(self._engine.registry.users())
        if users:
            await self.users_changed(users)
        self._recheck_all = False
        if self.secrets_changed is not None:
            for app in apps:
                self.secrets_changed(app)

    async def users_changed(self, user_ids: Collection[int]) -> int:
        """Re-check the live sessions of `user_ids`; return how many were closed.

        Raises:
            StorageError: the store cannot be read.
        """
        self.generation += 1
        if self.tokens_changed is not None:
            self.tokens_changed()
        sessions_of = self._engine.registry.sessions_of
        sessions = [s for user in user_ids for s in sessions_of(user)]
        if not sessions:
            return 0
        owners = await self._engine.store.token_owners([s.token_hash for s in sessions])
        now = self._engine.clock.wall_ms()
        closed = 0
        for session in sessions:
            if session.closed:  # it went while we read
                continue
            owner = owners.get(session.token_hash)
            if owner is None or owner.user_id != session.user_id:
                self._end(session, CloseCode.AUTH_FAILED,
                          "access token revoked or user deleted")
            elif owner.address != session.address:
                self._end(session, CloseCode.ADDRESS_CHANGED,
                          "the user was renamed; reconnect for the new address")
            elif owner.token_expires_ms <= now:
                self._end(session, CloseCode.TOKEN_EXPIRED, "access token expired")
            else:
                continue
            closed += 1
        if closed:
            log.info("closed %d session(s) whose credentials were revoked or changed", closed)
        return closed

    async def _recheck(self, user_ids: Collection[int]) -> None:
        try:
            await self.users_changed(user_ids)
        except StorageError as exc:
            self._recheck_all = True  # the next successful poll re-checks everyone
            log.warning("cannot re-check credentials: %s", exc)

    def _end(self, session: Session, code: CloseCode, reason: str) -> None:
        self.stats_closed += 1
        self._engine.end_session(session, code, reason)

    # --- the background task -------------------------------------------------------------

    async def run(self) -> None:
        """Expire and poll until cancelled (one task per server)."""
        engine = self._engine
        interval = engine.limits.credentials_poll_s
        clock = engine.clock
        next_poll = clock.monotonic()
        failing = False
        while True:
            now_ms = clock.wall_ms()
            self.expire(now_ms)
            if clock.monotonic() >= next_poll:
                next_poll = clock.monotonic() + interval
                try:
                    await self.poll()
                    if failing:
                        log.info("credential changes readable again")
                    failing = False
                except StorageError as exc:
                    # The database is away (SPEC M14): sessions stay open until
                    # it answers; then every one of them is re-checked.
                    self._recheck_all = True
                    if not failing:
                        log.warning("cannot read credential changes: %s", exc)
                    failing = True
            wait = next_poll - clock.monotonic()
            expiry = self.next_expiry_ms()
            if expiry is not None:
                wait = min(wait, (expiry - clock.wall_ms()) / 1000)
            await engine.scheduler.sleep(max(wait, 0.005))
