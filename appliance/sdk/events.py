"""Events to the app (listeners and async iterators) and the reconnect backoff (SDK)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

if TYPE_CHECKING:
    from appliance.sdk.models import ConnectionEvent, IncomingMessage, StatusUpdate

#: The client's logger (client.py's own `__name__`), named from this package so that
#: it follows the SDK when packaging/sdk renames it `tidings` (`tidings.client`).
CLIENT_LOGGER: Final = __name__.rpartition(".")[0] + ".client"
log = logging.getLogger(CLIENT_LOGGER)

T = TypeVar("T")
Listener = Callable[[T], Awaitable[None] | None]
_END = object()


class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog, 2015).

    Delay for attempt n is uniform in [0, min(cap, base * 2**n)], never below
    `floor`, so a thousand clients that lost the same server do not return in
    one wave.
    """

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0, floor_s: float = 0.05) -> None:
        self.base_s, self.cap_s, self.floor_s = base_s, cap_s, floor_s

    def delay(self, attempt: int) -> float:
        return max(self.floor_s, random.uniform(0, min(self.cap_s, self.base_s * 2 ** attempt)))


class _Subscription(Generic[T]):
    """An async iterator fed by the client; ends when the client closes."""

    def __init__(self, registry: list[_Subscription[T]]) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._registry = registry
        registry.append(self)

    def put(self, item: T) -> None:
        self._queue.put_nowait(item)

    def end(self) -> None:
        self._queue.put_nowait(_END)

    def __aiter__(self) -> _Subscription[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._queue.get()
        if item is _END:
            self.close()
            raise StopAsyncIteration
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop receiving (also done when the client closes)."""
        if self in self._registry:
            self._registry.remove(self)


class _Events(Generic[T]):
    """Listeners and iterators of one kind of event."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.listeners: list[Listener[T]] = []
        self.subscriptions: list[_Subscription[T]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def add(self, listener: Listener[T]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener) if listener in self.listeners else None

    def emit(self, item: T) -> None:
        for sub in self.subscriptions:
            sub.put(item)
        for listener in self.listeners:
            try:
                result = listener(item)
            except Exception:  # an app's listener must not break the client
                log.exception("%s listener %r failed", self.what, listener)
                continue
            if result is not None and inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self.tasks.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s listener failed", self.what, exc_info=task.exception())

    def end(self) -> None:
        for sub in list(self.subscriptions):
            sub.end()


class EventFeatures:
    """The events half of `Client` (a mixin: the client owns the registries and feeds them)."""

    _message_events: _Events[IncomingMessage]
    _status_events: _Events[StatusUpdate]
    _connection_events: _Events[ConnectionEvent]

    def on_message(self, listener: Listener[IncomingMessage]) -> Callable[[], None]:
        """Call `listener` (a function or coroutine function) for each new message.

        Returns a function that removes the listener.
        """
        return self._message_events.add(listener)

    def on_status(self, listener: Listener[StatusUpdate]) -> Callable[[], None]:
        """Call `listener` for each status change of a message this user sent."""
        return self._status_events.add(listener)

    def on_connection(self, listener: Listener[ConnectionEvent]) -> Callable[[], None]:
        """Call `listener` for each connection state change."""
        return self._connection_events.add(listener)

    def messages(self) -> AsyncIterator[IncomingMessage]:
        """New messages from now on: ``async for message in client.messages()``."""
        return _Subscription(self._message_events.subscriptions)

    def statuses(self) -> AsyncIterator[StatusUpdate]:
        """Status changes from now on."""
        return _Subscription(self._status_events.subscriptions)

    def connection_events(self) -> AsyncIterator[ConnectionEvent]:
        """Connection state changes from now on."""
        return _Subscription(self._connection_events.subscriptions)
