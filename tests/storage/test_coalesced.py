"""Calls to a store thread are batched: one job per loop turn, and none while one runs."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from appliance.storage.sql.store import Coalesced
from appliance.transport.tasks import spawn


class Recorder:
    """A job function that records its batches and can be held until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_running = 0
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self._lock = threading.Lock()

    def __call__(self, args: list[int]) -> list[int]:
        with self._lock:
            self.batches.append(args)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.entered.release()
        self.release.wait(10)
        with self._lock:
            self.running -= 1
        if -1 in args:
            raise ValueError("bad argument")
        return [a * 10 for a in args]


async def entered(job: Recorder) -> None:
    await asyncio.get_running_loop().run_in_executor(None, job.entered.acquire)


def test_calls_that_arrive_while_a_job_runs_go_together_next() -> None:
    async def go() -> None:
        job = Recorder()
        with ThreadPoolExecutor(1) as pool:
            calls = Coalesced(pool, job)
            first = [spawn(calls.call(i), "call") for i in (1, 2)]
            await entered(job)  # the first job runs and is held
            later = [spawn(calls.call(i), "call") for i in (3, 4, 5)]
            await asyncio.sleep(0)
            await asyncio.sleep(0)  # several loop turns pass: no job starts meanwhile
            later.append(spawn(calls.call(6), "call"))
            await asyncio.sleep(0)
            assert job.batches == [[1, 2]]
            job.release.set()
            assert await asyncio.gather(*first, *later) == [10, 20, 30, 40, 50, 60]
            assert job.batches == [[1, 2], [3, 4, 5, 6]]
            assert job.most_running == 1

    asyncio.run(go())


def test_parallel_jobs_up_to_the_limit() -> None:
    async def go() -> None:
        job = Recorder()
        with ThreadPoolExecutor(2) as pool:
            calls = Coalesced(pool, job, parallel=2)
            a = spawn(calls.call(1), "call")
            await entered(job)
            b = spawn(calls.call(2), "call")
            await entered(job)  # a second job starts beside the first
            c = spawn(calls.call(3), "call")
            d = spawn(calls.call(4), "call")
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert job.batches == [[1], [2]]  # 3 and 4 wait for a free slot
            job.release.set()
            assert await asyncio.gather(a, b, c, d) == [10, 20, 30, 40]
            assert job.batches == [[1], [2], [3, 4]]
            assert job.most_running == 2

    asyncio.run(go())


def test_a_failed_job_fails_each_of_its_calls_and_the_next_job_runs() -> None:
    async def go() -> None:
        job = Recorder()
        job.release.set()
        with ThreadPoolExecutor(1) as pool:
            calls = Coalesced(pool, job)
            bad = [spawn(calls.call(i), "call") for i in (7, -1)]
            for future in bad:
                with pytest.raises(ValueError, match="bad argument"):
                    await future
            assert await calls.call(8) == 80

    asyncio.run(go())
