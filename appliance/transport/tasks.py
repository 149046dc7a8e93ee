"""`spawn`: the one way to start a background task (ruff bans create_task elsewhere).

Tasks are named, strongly referenced until done (asyncio keeps only weak
references: RUF006), and a failure is logged instead of vanishing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """Start `coro` as a supervised task called `name`."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s failed", task.get_name(), exc_info=exc)


class LoopScheduler:
    """The engine's `Scheduler` port on the running asyncio loop."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def soon(self, callback: Callable[[], None]) -> None:
        """See `Scheduler.soon`."""
        self._loop.call_soon(callback)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """See `Scheduler.spawn`."""
        spawn(coro, name)

    async def sleep(self, seconds: float) -> None:
        """See `Scheduler.sleep`."""
        await asyncio.sleep(seconds)

    def future(self) -> asyncio.Future[Any]:
        """See `Scheduler.future`."""
        return self._loop.create_future()
