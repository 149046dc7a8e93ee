"""`ImagePool`: Pillow work in worker processes, off the server's event loop.

A job (probe, sanitize, thumbnail) is sent to an idle worker as a few hundred bytes of
JSON naming paths (`protocol`); the loop only waits on the worker's pipes.  At most
`workers` jobs run and `queue` wait; one more is refused at once (ImageBusyError: 503,
retry) rather than queued without bound.  Jobs name their owner (an app): one owner has
at most half of those places, and a worker that comes free goes to the waiting job whose
owner holds the fewest workers (the longest waiting of those), so one app's burst of
heavy images neither fills the queue nor makes another app's image wait behind all of
it.  A job running past `timeout_s` has its worker SIGKILLed (a decoder stuck in C
cannot be interrupted any other way) and gets ImageTimeoutError; a worker that dies on
its own (a crash in a C decoder) fails only that job.  Either way a replacement starts
in the background and the pool keeps going.

How workers are started and why (not `multiprocessing`): `process`.

No orphans.  `close` closes every worker's stdin (a worker exits at the end of its
input), waits `CLOSE_GRACE_S`, then SIGKILLs and reaps.  A SIGKILLed server cannot do
that: each worker sets ``PR_SET_PDEATHSIG`` (SIGKILL) and then checks that its parent
is still the server (worker.py); frozen, packaging/entry.py's `die_with_bootloader`
does the same first.  The death signal fires when the *thread* that forked the worker
ends: workers are started from the event loop's thread, which lives as long as the
server.  Start-up cost is measured (`last_startup_s`; ~0.1 s from the sources, see the
issue 15 report): workers start at `start` or, without it, with the first jobs.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final

from appliance.errors import (
    ApplianceError,
    ImageBusyError,
    ImageRefusedError,
    ImageTimeoutError,
    MediaError,
)
from appliance.media.config import MediaConfig
from appliance.media.images.model import (
    MAX_THUMBNAIL_SIZE,
    THUMBNAIL_FORMATS,
    ImageInfo,
    ImageLimits,
)
from appliance.media.images.process import (
    WorkerLostError,
    WorkerProcess,
    worker_environment,
)
from appliance.media.images.protocol import (
    MEMORY_ENV,
    PARENT_PID_ENV,
    WorkerMessageError,
    encode,
    info_from_wire,
    limits_to_wire,
    worker_memory_bytes,
)

log = logging.getLogger(__name__)

#: `close` lets a worker finish and exit this long before it is killed.
CLOSE_GRACE_S: Final = 2.0
#: A worker is replaced after this many jobs: whatever a decoder leaked or fragmented in
#: its heap goes with it.
RECYCLE_AFTER_JOBS: Final = 1000
#: A reason from a worker is cut to this many characters.
MAX_REASON_CHARS: Final = 200


class ImagePool:
    """Image jobs in `workers` processes (0: min(2, CPUs)), `queue` more waiting."""

    def __init__(self, workers: int, queue: int, timeout_s: float, limits: ImageLimits, *,
                 recycle_after: int = RECYCLE_AFTER_JOBS) -> None:
        if workers < 0 or queue < 0 or not timeout_s > 0 or recycle_after < 1:
            raise ValueError("workers and queue must be >= 0, timeout_s > 0,"
                             " recycle_after >= 1")
        self.recycle_after = recycle_after
        self.size = workers or min(2, os.cpu_count() or 1)
        self.queue = queue
        self.timeout_s = timeout_s
        self.limits = limits
        #: Seconds the latest worker took from spawn to ready (None before any).
        self.last_startup_s: float | None = None
        self._idle: list[WorkerProcess] = []
        self._workers: set[WorkerProcess] = set()
        self._starting = 0
        self._jobs = 0  # running and waiting
        #: Per owner: jobs running and waiting, and workers held (running jobs).
        self._owned: collections.Counter[int] = collections.Counter()
        self._holding: collections.Counter[int] = collections.Counter()
        #: Jobs waiting for a worker: (owner, woken when it is its turn), in arrival order.
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    @classmethod
    def from_config(cls, media: MediaConfig) -> ImagePool:
        """The pool ``[media]`` describes (image_workers, image_queue, image_timeout_s,
        max_image_pixels, max_image_side, max_image_frames)."""
        limits = ImageLimits(media.max_image_pixels, media.max_image_side,
                             media.max_image_frames)
        return cls(media.image_workers, media.image_queue, media.image_timeout_s, limits)

    # --- the API ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers now rather than with the first jobs.

        Raises:
            MediaError: a worker could not start (the pool still works with the others).
        """
        self._check_open()
        spawns = [self._spawn() for _ in range(self.size - self._alive)]
        results = await asyncio.gather(*spawns, return_exceptions=True)
        for result in results:
            if isinstance(result, WorkerProcess):
                self._release(result)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def close(self) -> None:
        """Stop every worker (end of input, then SIGKILL after `CLOSE_GRACE_S`) and reap
        them; jobs still running or waiting get MediaError.  Idempotent."""
        self._closed = True
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)  # it looks again and sees the pool closed
        self._idle.clear()
        while self._workers or self._tasks:
            workers, self._workers = list(self._workers), set()
            await asyncio.gather(*(w.stop(CLOSE_GRACE_S) for w in workers),
                                 *list(self._tasks), return_exceptions=True)

    async def probe(self, src: Path | str, *, owner: int = 0) -> ImageInfo:
        """The image's format, size (upright) and frames, from its header.

        `owner` (here and below): the app whose job it is, for the fair shares (0: the
        server's own, the doctor's: not held to a share)."""
        return await self._submit({"op": "probe", "src": _absolute(src)}, owner)

    async def sanitize(self, src: Path | str, dst: Path | str, *, owner: int = 0
                       ) -> ImageInfo:
        """`codec.sanitize` in a worker: `dst` is `src` without metadata, upright, sRGB."""
        return await self._submit({"op": "sanitize", "src": _absolute(src),
                                   "dst": _absolute(dst)}, owner)

    async def thumbnail(self, src: Path | str, dst: Path | str, *, size: int, fmt: str,
                        square: bool, use_draft: bool = True, owner: int = 0) -> ImageInfo:
        """`codec.thumbnail` in a worker (`fmt` "webp" or "jpeg")."""
        if not 1 <= size <= MAX_THUMBNAIL_SIZE or fmt not in THUMBNAIL_FORMATS:
            raise ValueError(f"thumbnail size 1 to {MAX_THUMBNAIL_SIZE}, format one of"
                             f" {THUMBNAIL_FORMATS}")
        return await self._submit({"op": "thumbnail", "src": _absolute(src),
                                   "dst": _absolute(dst), "size": size, "fmt": fmt,
                                   "square": square, "draft": use_draft}, owner)

    async def run_test_hook(self, op: str, value: float, *, owner: int = 0) -> None:
        """Tests only: "sleep" `value` s or "allocate" `value` bytes in a worker.

        Workers refuse it (MediaError) unless ``TIDINGS_IMAGE_TEST_HOOKS=1`` is in their
        environment (`protocol.TEST_HOOKS_ENV`)."""
        await self._submit({"op": op, "value": value}, owner)

    @property
    def pids(self) -> tuple[int, ...]:
        """The worker processes running now (for tests and diagnostics)."""
        return tuple(sorted(w.pid for w in self._workers))

    # --- jobs -------------------------------------------------------------------------

    async def _submit(self, request: dict[str, Any], owner: int) -> ImageInfo:
        self._check_open()
        places = self.size + self.queue
        if self._jobs >= places:
            raise ImageBusyError(f"all {self.size} image workers are busy and {self.queue}"
                                 " jobs are waiting; retry later",
                                 retry_after_s=self.timeout_s)  # a job's longest
        if owner and self._owned[owner] >= max(1, places // 2):
            raise ImageBusyError(f"this app has {self._owned[owner]} images being processed"
                                 " or waiting, half of what the workers take; retry later",
                                 retry_after_s=self.timeout_s)
        request["limits"] = limits_to_wire(self.limits)
        message = encode(request)
        self._jobs += 1
        self._owned[owner] += 1
        try:
            worker = await self._acquire(owner)
            self._holding[owner] += 1
            try:
                return await self._run(worker, message)
            finally:
                # After the worker was passed on: this owner's job counted at that
                # turn, so a waiting job of another owner went first.
                _decrement(self._holding, owner)
        finally:
            self._jobs -= 1
            _decrement(self._owned, owner)

    async def _run(self, worker: WorkerProcess, message: bytes) -> ImageInfo:
        """One job on `worker`, which goes back to the pool or is replaced."""
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await worker.call(message)
        except TimeoutError:
            self._discard(worker)
            raise ImageTimeoutError(f"the image took longer than {self.timeout_s:g} s"
                                    " to process") from None
        except WorkerLostError:
            self._discard(worker)
            self._check_open()
            raise ImageRefusedError("the image worker died processing this image"
                                    ) from None
        except WorkerMessageError as exc:
            self._discard(worker)
            raise MediaError(f"the image worker answered nonsense: {exc}") from None
        except BaseException:  # cancelled mid-job: its answer would go to the next job
            self._discard(worker)
            raise
        try:
            info = _answer(answer)
        except WorkerMessageError as exc:
            self._discard(worker)
            raise MediaError(f"the image worker answered nonsense: {exc}") from None
        except ApplianceError:  # refused or failed: the worker is fine
            self._done(worker)
            raise
        self._done(worker)
        return info

    async def _acquire(self, owner: int) -> WorkerProcess:
        """An idle worker; a new one if the pool is short of workers; else wait for one."""
        while True:
            self._check_open()
            if self._idle:
                return self._idle.pop()
            if self._alive < self.size:
                return await self._spawn()
            waiter = asyncio.get_running_loop().create_future()
            entry = (owner, waiter)
            self._waiters.append(entry)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # it was our turn: pass it on
                raise
            finally:
                if entry in self._waiters:
                    self._waiters.remove(entry)

    def _done(self, worker: WorkerProcess) -> None:
        """`worker` answered a job: back to work, or replaced after `recycle_after` jobs."""
        worker.jobs_done += 1
        if worker.jobs_done >= self.recycle_after:
            self._discard(worker)  # idle: nothing is lost; the replacement starts now
        else:
            self._release(worker)

    def _release(self, worker: WorkerProcess) -> None:
        if self._closed:
            self._track(worker.stop(0))
            return
        self._idle.append(worker)
        self._wake_one()

    def _discard(self, worker: WorkerProcess) -> None:
        """Kill `worker` (mid-job, lost or untrusted); reap it and start a replacement."""
        worker.kill()
        self._workers.discard(worker)
        self._track(self._reap_and_replace(worker))

    async def _reap_and_replace(self, worker: WorkerProcess) -> None:
        await worker.proc.wait()
        log.info("image worker %d ended (status %s)", worker.pid, worker.proc.returncode)
        if self._closed or self._alive >= self.size:
            return
        try:
            replacement = await self._spawn()
        except MediaError as exc:
            log.error("image worker not replaced: %s", exc)
            self._wake_one()  # a waiting job tries (and reports the failure) itself
            return
        self._release(replacement)

    def _wake_one(self) -> None:
        """Give the turn to the waiting job whose owner holds the fewest workers, the
        longest waiting of those: one owner's burst waits its turns among the others'."""
        waiters, holding = self._waiters, self._holding
        while waiters:
            turn = min(range(len(waiters)), key=lambda i: holding[waiters[i][0]])
            _, waiter = waiters.pop(turn)
            if not waiter.done():
                waiter.set_result(None)
                return

    # --- workers ----------------------------------------------------------------------

    @property
    def _alive(self) -> int:
        return len(self._workers) + self._starting

    async def _spawn(self) -> WorkerProcess:
        """A new worker, counted from now (`_alive`); if our caller is cancelled while it
        starts, it goes idle when ready (it is started in a task of its own)."""
        self._starting += 1
        task = self._track(self._start_worker())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._adopt)
            raise

    async def _start_worker(self) -> WorkerProcess:
        env = {**worker_environment(), PARENT_PID_ENV: str(os.getpid()),
               MEMORY_ENV: str(worker_memory_bytes(self.limits))}
        started = time.perf_counter()
        try:
            worker = await WorkerProcess.start(env)
        finally:
            self._starting -= 1
        self.last_startup_s = time.perf_counter() - started
        if self._closed:
            await worker.stop(0)
            raise MediaError("the image pool is closed")
        self._workers.add(worker)
        return worker

    def _adopt(self, task: asyncio.Task[WorkerProcess]) -> None:
        if not task.cancelled() and task.exception() is None:
            self._release(task.result())

    def _track(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task the pool keeps a reference to, and `close` waits for."""
        task = asyncio.get_running_loop().create_task(coro, name="image-pool")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None and not isinstance(error, MediaError):  # those reached a job
            log.error("image pool task failed", exc_info=error)

    def _check_open(self) -> None:
        if self._closed:
            raise MediaError("the image pool is closed")


def _decrement(counter: collections.Counter[int], key: int) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


def _absolute(path: Path | str) -> str:
    return os.path.abspath(os.fspath(path))


def _answer(answer: dict[str, Any]) -> ImageInfo:
    """A worker's answer -> the job's result or error."""
    if "info" in answer:
        return info_from_wire(answer["info"])
    for key, error in (("refused", ImageRefusedError), ("failed", MediaError)):
        reason = answer.get(key)
        if isinstance(reason, str):
            raise error(reason[:MAX_REASON_CHARS])
    raise WorkerMessageError("an answer without info, refused or failed")
