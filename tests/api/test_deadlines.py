"""Backend sends that the engine never answers fail after the timeout, with one timer."""

from __future__ import annotations

import asyncio

import pytest

from appliance.api.messages import _Deadlines


def test_an_unanswered_send_times_out_and_answered_ones_do_not() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        deadlines = _Deadlines(0.05)
        answered = loop.create_future()
        deadlines.watch(answered)
        answered.set_result((1, 2))
        silent = loop.create_future()
        deadlines.watch(silent)
        started = loop.time()
        with pytest.raises(TimeoutError):
            await silent
        assert loop.time() - started >= 0.04
        assert answered.result() == (1, 2)
        # A later send gets its own full deadline (the timer is re-armed).
        late = loop.create_future()
        deadlines.watch(late)
        with pytest.raises(TimeoutError):
            await late

    asyncio.run(go())


def test_answered_sends_do_not_pile_up() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        deadlines = _Deadlines(30.0)
        for _ in range(1000):
            future = loop.create_future()
            deadlines.watch(future)
            future.set_result(None)
        assert len(deadlines._queue) == 1  # only the newest, not yet seen answered

    asyncio.run(go())
