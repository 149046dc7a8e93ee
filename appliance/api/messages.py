"""Sending from the app's backend: ``POST /v1/messages`` (SPEC M8).

Sent as a user (``from``) or, without ``from``, as the app itself (the
reserved user ``@app``).  The message enters the engine through
`Engine.submit`, exactly as if the sender's device had sent it (same
validation, dedupe by (sender, id), group commit, fan-out, receipts); the
engine's typed answer (SENT or an error status) is the HTTP answer.  Receipts
(DELIVERED, READ) go to the sender's devices as usual.

A JSON array sends a batch (issue 16): up to `MAX_BATCH` messages, each
answered on its own (an invalid one does not stop the others), committed
together, so an app's backend is not bound by one HTTP request per message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import random
from typing import Any

from appliance.api.http import ApiError
from appliance.api.inputs import checked, int_field
from appliance.engine.core import Engine
from appliance.engine.submit import Sender, Submitted
from appliance.errors import ConflictError
from appliance.protocol.wire import (
    PRIORITY_MAX,
    STORED_U64_MAX,
    TYPE_MAX,
    Flag,
    Message,
    Status,
)
from appliance.protocol.wire.constants import DEFAULT_EXPIRY_S, U32_MAX, U64_MAX
from appliance.service.admin import APP_SENDER, check_address
from appliance.storage.interface import Storage
from appliance.storage.models import AppInfo

_TIMEOUT_S = 30.0
#: How long a sender's user id is reused without a store read.
USER_CACHE_S = 2.0
#: Messages in one ``POST /v1/messages`` array (each also within the 1 MiB body).
MAX_BATCH = 1000
#: status -> (HTTP status, title) for a message the engine refused.
_REFUSED = {
    Status.INVALID_DEST: (422, "invalid destination"),
    Status.NOT_MEMBER: (403, "not a member"),
    Status.TOO_LARGE: (413, "content too large"),
    Status.FAILED: (503, "storage unavailable"),
    Status.RATE_LIMITED: (429, "too many requests"),
    Status.BLOCKED: (403, "blocked"),
    Status.INBOX_FULL: (507, "inbox full"),
    Status.INVALID_FILE: (422, "invalid file"),
}


def _address(doc: dict[str, Any], name: str, default: str | None = None) -> str | None:
    """An address field, in the one form the store keeps (`check_address`: NFC)."""
    value = doc.get(name, default)
    if value == APP_SENDER or (value is None and default is None):
        return value
    if not isinstance(value, str):
        raise ApiError(422, "invalid request", f"{name!r} must be a user address", field=name)
    return checked(check_address, value, name)


class _Deadlines:
    """Fails the sends still unanswered after `timeout_s`, with one timer for all.

    `asyncio.timeout` per request (a timer handle, a heap push and a cancel)
    cost ~4 % of a POST /v1/messages.  Every send waits the same time, so the
    deadlines are in arrival order: answered ones are dropped from the front.
    """

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._queue: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, future: asyncio.Future[Any]) -> None:
        queue = self._queue
        while queue and queue[0][1].done():
            queue.popleft()
        loop = asyncio.get_running_loop()
        queue.append((loop.time() + self._timeout_s, future))
        if self._timer is None:
            self._timer = loop.call_at(queue[0][0], self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        queue, now = self._queue, loop.time()
        while queue and (queue[0][0] <= now or queue[0][1].done()):
            _, future = queue.popleft()
            if not future.done():
                future.set_exception(TimeoutError())
        if queue:
            self._timer = loop.call_at(queue[0][0], self._expire, loop)


class BackendSender:
    """Turns ``POST /v1/messages`` bodies into `Engine.submit` calls."""

    def __init__(self, engine: Engine, store: Storage) -> None:
        self.engine = engine
        self.store = store
        self._last_id = 0
        self._users: dict[tuple[int, bytes], tuple[int, float]] = {}
        self._deadlines = _Deadlines(_TIMEOUT_S)

    def _next_id(self) -> int:
        # As the SDK does: time-ordered, increasing, random low bits.
        candidate = (self.engine.clock.wall_ms() << 20) | random.getrandbits(20)
        self._last_id = max(candidate, self._last_id + 1)
        return self._last_id

    async def send(self, app: AppInfo, doc: dict[str, Any]) -> dict[str, Any]:
        """Send one message; return {"id", "status", "timestamp_ms"}.

        Raises:
            ApiError: a malformed body, an unknown sender, or a refused message.
            BusyError, TooManyRequestsError: the engine holds as many submitted
                messages as it takes (`Engine.submit_many`): nothing was sent.
        """
        sender, message = await self._parse(app, doc, {})
        [answers] = await self._answered([(sender, [message])])
        if isinstance(answers, ApiError):
            raise answers
        [answer] = answers
        if answer.status in _REFUSED:
            raise _refusal(answer)
        return _answer_doc(answer)

    async def send_batch(self, app: AppInfo, docs: list[Any]) -> list[dict[str, Any]]:
        """Send an array of messages; one result per message, in order.

        A result is {"id", "status", "timestamp_ms"} or, for a message that
        was not sent, {"error": <problem>} (with the id when it had one).

        Raises:
            ApiError: the array is empty or longer than `MAX_BATCH`.
            BusyError, TooManyRequestsError: see `send`; the whole array is refused.
        """
        if not 1 <= len(docs) <= MAX_BATCH:
            raise ApiError(422, "invalid request",
                           f"an array of 1..{MAX_BATCH} messages is expected")
        # The array's room is held from now on, not from its submission: parsing
        # it and looking up its senders (a store read each) is the work a flood
        # of arrays refused only after it spent (the core, or +230 MiB of results
        # waiting on 1,000 lookups each).  Given back in the same turn as
        # `_answered` takes what is submitted: nothing can slip in between.
        budget = self.engine.submissions
        budget.take({app.app_id: len(docs)})
        results: list[dict[str, Any] | None] = [None] * len(docs)
        try:
            groups = await self._parse_all(app, docs, results)
        finally:
            budget.give(app.app_id, len(docs))
        items = list(groups.values())
        answered = await self._answered([(sender, [m for _, m in group])
                                         for sender, group in groups.items()])
        for group, answers in zip(items, answered, strict=True):
            if isinstance(answers, ApiError):  # not answered in time
                for i, m in group:
                    results[i] = {"error": _problem_doc(answers) | {"id": m.id}}
                continue
            for (i, _), answer in zip(group, answers, strict=True):
                results[i] = ({"error": _problem_doc(_refusal(answer))}
                              if answer.status in _REFUSED else _answer_doc(answer))
        return results  # type: ignore[return-value]  # every slot was filled

    async def _parse_all(self, app: AppInfo, docs: list[Any],
                         results: list[dict[str, Any] | None]
                         ) -> dict[Sender, list[tuple[int, Message]]]:
        """An array's messages by sender; each one refused goes into `results`."""
        groups: dict[Sender, list[tuple[int, Message]]] = {}
        seen: set[tuple[Sender, int]] = set()
        users: dict[bytes, int | None] = {}  # each sender looked up once per array
        for i, doc in enumerate(docs):
            try:
                if not isinstance(doc, dict):
                    raise ApiError(422, "invalid request", "each message must be an object")
                sender, message = await self._parse(app, doc, users)
                if (sender, message.id) in seen:
                    raise ApiError(422, "invalid request",
                                   f"id {message.id} is given twice in this batch", field="id",
                                   id=message.id)
            except ApiError as exc:
                results[i] = {"error": _problem_doc(exc)}
                continue
            seen.add((sender, message.id))
            groups.setdefault(sender, []).append((i, message))
        return groups

    async def _answered(self, submissions: list[tuple[Sender, list[Message]]]
                        ) -> list[list[Submitted] | ApiError]:
        """Submit every sender's messages at once (one group commit), then wait for each
        sender's answers; an ApiError (503) for a sender not answered in time."""
        if not submissions:
            return []
        futures = self.engine.submit_many(submissions)
        for future in futures:
            self._deadlines.watch(future)  # type: ignore[arg-type]  # an asyncio future
        out: list[list[Submitted] | ApiError] = []
        try:
            for (_, messages), future in zip(submissions, futures, strict=True):
                try:
                    out.append(await future)
                except TimeoutError:
                    ids = [m.id for m in messages]
                    out.append(ApiError(503, "storage unavailable",
                                        "the message was not answered in time; resend it with"
                                        " the same id",
                                        **({"id": ids[0]} if len(ids) == 1 else {})))
        finally:
            # The request was cancelled (its client went away): the deadline's
            # TimeoutError in the futures left is nobody's, and each would log
            # "Future exception was never retrieved".
            for future in futures[len(out):]:
                future.add_done_callback(_retrieve)  # type: ignore[attr-defined]
        return out

    async def _parse(self, app: AppInfo, doc: dict[str, Any], users: dict[bytes, int | None]
                     ) -> tuple[Sender, Message]:
        """The sender and the message a request names (`users`: senders already looked up).

        Raises:
            ApiError: 422 naming the field at fault, or the unknown sender.
        """
        address = _address(doc, "from", APP_SENDER) or APP_SENDER  # never None: see _address
        to, group = _address(doc, "to"), doc.get("group")
        if (to is None) == (group is None):
            raise ApiError(422, "invalid request", "give exactly one of 'to' and 'group'")
        group_id = 0 if group is None else int_field(doc, "group", 0, 1, STORED_U64_MAX)
        payload = self._payload(doc)
        msg_id = int_field(doc, "id", 0, 0, U64_MAX) or self._next_id()
        message = Message(
            msg_id, (to or "").encode(), payload, group_id=group_id,
            refid=int_field(doc, "refid", 0, 0, U64_MAX),
            expiry_s=int_field(doc, "expiry_s", DEFAULT_EXPIRY_S, 0, U32_MAX),
            type=int_field(doc, "type", 0, 0, TYPE_MAX),
            flags=int_field(doc, "flags", Flag.DEFAULT, 0, Flag.CLIENT_MASK),
            priority=int_field(doc, "priority", 0, 0, PRIORITY_MAX))
        key = address.encode()
        user_id = users[key] if key in users else await self._user_id(app.app_id, key)
        if user_id is None and address == APP_SENDER:
            user_id = await self._create_app_sender(app.app_id)
        users[key] = user_id
        if user_id is None:
            raise ApiError(422, "invalid request", f"no user {address!r} in this app",
                           field="from")
        return Sender(app.app_id, user_id, address.encode()), message

    async def _create_app_sender(self, app_id: int) -> int | None:
        with contextlib.suppress(ConflictError):  # a concurrent request created it
            await self.store.create_user(app_id, APP_SENDER, self.engine.clock.wall_ms())
        return await self.store.find_user(app_id, APP_SENDER.encode())

    def forget_users(self) -> None:
        """Drop the cached senders (users were deleted or renamed, here or elsewhere)."""
        self._users.clear()

    async def _user_id(self, app_id: int, address: bytes) -> int | None:
        # Cached briefly: a store read per request cost as much as the rest of it.
        now = self.engine.clock.monotonic()
        key = (app_id, address)
        cached = self._users.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        user_id = await self.store.find_user(app_id, address)
        if user_id is not None:
            if len(self._users) > 100_000:
                self._users.clear()
            self._users[key] = (user_id, now + USER_CACHE_S)
        return user_id

    @staticmethod
    def _payload(doc: dict[str, Any]) -> bytes:
        text, b64 = doc.get("text"), doc.get("payload_base64")
        if (text is None) == (b64 is None):
            raise ApiError(422, "invalid request", "give exactly one of 'text' and"
                           " 'payload_base64'")
        if text is not None:
            if not isinstance(text, str):
                raise ApiError(422, "invalid request", "'text' must be a string", field="text")
            return text.encode()
        if not isinstance(b64, str):
            raise ApiError(422, "invalid request", "'payload_base64' must be a string",
                           field="payload_base64")
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, "invalid request", "'payload_base64' is not base64",
                           field="payload_base64") from None


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _answer_doc(answer: Submitted) -> dict[str, Any]:
    return {"id": answer.msg_id, "status": answer.status.name,
            "timestamp_ms": answer.timestamp_ms}


def _refusal(answer: Submitted) -> ApiError:
    http, title = _REFUSED[answer.status]
    return ApiError(http, title, f"message {answer.msg_id}: {answer.status.name}",
                    id=answer.msg_id, message_status=answer.status.name)


def _problem_doc(exc: ApiError) -> dict[str, Any]:
    """What `http.problem` would answer, as one item of a batch's results."""
    doc: dict[str, Any] = {"type": "about:blank", "title": exc.title, "status": exc.status}
    if exc.detail:
        doc["detail"] = exc.detail
    doc.update(exc.extra)
    return doc
