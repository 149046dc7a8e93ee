"""Sending from the app's backend: ``POST /v1/messages`` (SPEC M8).

Sent as a user (``from``) or, without ``from``, as the app itself (the
reserved user ``@app``).  The message enters the engine exactly as if the
sender's device had sent it
(same validation, dedupe by (sender, id), group commit, fan-out, receipts),
through a session with no device of its own; the engine's answer (SENT or an
error status) is the HTTP answer.  Receipts (DELIVERED, READ) go to the
sender's devices as usual.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import random
import struct
from typing import Any

from appliance.api.http import ApiError
from appliance.api.inputs import checked, int_field
from appliance.engine.delivery import Engine
from appliance.engine.quotas import UNLIMITED_CREDIT
from appliance.engine.session import Session
from appliance.errors import ConflictError
from appliance.protocol.wire import (
    PRIORITY_MAX,
    STORED_U64_MAX,
    TYPE_MAX,
    Flag,
    FrameType,
    Message,
    Status,
    Welcome,
    decode_status,
)
from appliance.protocol.wire.frames import U64_MAX
from appliance.service.admin import APP_SENDER, check_address
from appliance.storage.interface import Storage
from appliance.storage.models import AppInfo

_HEADER = struct.Struct(">IB")
_TIMEOUT_S = 30.0
#: How long a sender's user id is reused without a store read.
USER_CACHE_S = 2.0
_DEFAULT_EXPIRY_S = 7 * 86400
U32_MAX = 2**32 - 1
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


class _StatusLink:
    """The engine's `Link` for one backend send: it only listens for the STATUS."""

    open = True

    def __init__(self) -> None:
        self.answer: asyncio.Future[tuple[int, int]] = (
            asyncio.get_running_loop().create_future())

    def write(self, data: bytes) -> None:
        pos = 0
        while pos + _HEADER.size <= len(data):
            length, ftype = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + length
            if ftype == FrameType.STATUS and not self.answer.done():
                status = decode_status(data, pos + _HEADER.size, end)
                self.answer.set_result((status.status, status.timestamp_ms))
            pos = end

    def welcome(self, welcome: Welcome) -> None:
        """Never called: the session is not opened with a HELLO."""

    def close(self, code: int, reason: str) -> None:
        """Nothing to close."""

    def pause_reading(self) -> None:
        """Nothing to pause."""

    def resume_reading(self) -> None:
        """Nothing to resume."""


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
    """Turns ``POST /v1/messages`` bodies into engine messages."""

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
        """Send; return {"id", "status", "timestamp_ms"}.

        Raises:
            ApiError: a malformed body, an unknown sender, or a refused message.
        """
        sender = _address(doc, "from", APP_SENDER) or APP_SENDER  # never None: see _address
        to, group = _address(doc, "to"), doc.get("group")
        if (to is None) == (group is None):
            raise ApiError(422, "invalid request", "give exactly one of 'to' and 'group'")
        group_id = 0 if group is None else int_field(doc, "group", 0, 1, STORED_U64_MAX)
        payload = self._payload(doc)
        msg_id = int_field(doc, "id", 0, 0, U64_MAX) or self._next_id()
        user_id = await self._user_id(app.app_id, sender.encode())
        if user_id is None and sender == APP_SENDER:
            user_id = await self._create_app_sender(app.app_id)
        if user_id is None:
            raise ApiError(422, "invalid request", f"no user {sender!r} in this app",
                           field="from")
        link = _StatusLink()
        session = Session(link, app.app_id, user_id, sender.encode(), b"", 0, 0)
        session.send_credit = UNLIMITED_CREDIT  # the app's backend: no per-user send rate
        self.engine.on_message(session, Message(
            msg_id, (to or "").encode(), payload, group_id=group_id,
            refid=int_field(doc, "refid", 0, 0, U64_MAX),
            expiry_s=int_field(doc, "expiry_s", _DEFAULT_EXPIRY_S, 0, U32_MAX),
            type=int_field(doc, "type", 0, 0, TYPE_MAX),
            flags=int_field(doc, "flags", Flag.DEFAULT, 0, Flag.CLIENT_MASK),
            priority=int_field(doc, "priority", 0, 0, PRIORITY_MAX)))
        self._deadlines.watch(link.answer)
        try:
            status, ts = await link.answer
        except TimeoutError:
            raise ApiError(503, "storage unavailable", "the message was not answered in time;"
                           " resend it with the same id") from None
        name = Status(status).name
        if status in _REFUSED:
            http, title = _REFUSED[Status(status)]
            raise ApiError(http, title, f"message {msg_id}: {name}", id=msg_id,
                           message_status=name)
        return {"id": msg_id, "status": name, "timestamp_ms": ts}

    async def _create_app_sender(self, app_id: int) -> int | None:
        with contextlib.suppress(ConflictError):  # a concurrent request created it
            await self.store.create_user(app_id, APP_SENDER, self.engine.clock.wall_ms())
        return await self.store.find_user(app_id, APP_SENDER.encode())

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
