"""One image worker process seen from the server: how it is started, spoken to, stopped.

Why these workers, and not `multiprocessing` or `concurrent.futures`:

* ``ProcessPoolExecutor`` cannot kill one job's process, and a worker that dies breaks
  the whole executor (``BrokenProcessPool``: every queued job fails, the pool must be
  rebuilt) — exactly what a hostile image makes happen;
* a ``multiprocessing`` 'spawn' worker re-imports the server's ``__main__`` (the CLI:
  click and the whole appliance, ~0.7 s) and, frozen, needs ``freeze_support()`` and
  PyInstaller's runtime hook to recognise its ``-c 'from multiprocessing.spawn ...'``
  command line; it also starts a resource-tracker process of its own (one more process
  to keep from being orphaned), and its ``Connection`` blocks (threads to wait on it);
* our own command on pipes (``asyncio.create_subprocess_exec``) has none of that: the
  loop waits on the pipes, a kill is ``proc.kill()``, the worker imports the codec and
  Pillow only, and the same command works both ways (`worker_command`).  From the
  sources: ``python -m appliance.media.images.worker`` with the working directory at
  the root of the `appliance` package this server runs (so the worker runs the same
  code; jobs carry absolute paths).  Frozen: ``sys.executable WORKER_ARG`` — the
  one-file bootloader started as a subprocess of the one-file child finds that child's
  ``_PYI_APPLICATION_HOME_DIR`` in its environment and runs from the files already
  unpacked (no second unpacking, no second bootloader process), and packaging/entry.py
  dispatches on `WORKER_ARG` before the CLI is imported.

Each worker gets an allowlisted part of the server's environment
(`WORKER_ENVIRONMENT`).  Not a sandbox: a worker runs as the server's user, so a decoder
exploit could read what that user reads; the header checks, RLIMIT_AS, the time limit and
the process boundary are what keep a hostile image from costing more than one job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Final

from appliance.errors import MediaError
from appliance.media.images.protocol import WORKER_ARG, WorkerMessageError, body_length, decode

#: A worker must say it is ready within this (cold start from the sources: ~0.1 s).
STARTUP_TIMEOUT_S: Final = 10.0
#: What a worker inherits of the server's environment (names, or prefixes ending in "_"):
#: the locale, library paths, the one-file bootloader's variables (``_PYI_*``, so that
#: it reuses the unpacked files), our own.  Database passwords and the like stay out.
WORKER_ENVIRONMENT: Final = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "HOME", "LC_",
                             "LD_", "PYTHONPATH", "PYTHONHOME", "_PYI_", "_MEI", "PYINSTALLER_",
                             "TIDINGS_IMAGE_")
#: Root of the sources the server runs: ``<root>/appliance/media/images/process.py``.
_SOURCE_ROOT: Final = Path(__file__).resolve().parents[3]


class WorkerLostError(Exception):
    """The worker's pipes closed: it died (killed, crashed, out of memory)."""


def worker_environment() -> dict[str, str]:
    """The part of our environment a worker gets (`WORKER_ENVIRONMENT`)."""
    return {name: value for name, value in os.environ.items()
            if any(name == allowed or (allowed.endswith("_") and name.startswith(allowed))
                   for allowed in WORKER_ENVIRONMENT)}


def worker_command() -> tuple[list[str], str | None]:
    """The command that starts a worker and its working directory (see the docstring)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, WORKER_ARG], None
    return [sys.executable, "-m", "appliance.media.images.worker"], str(_SOURCE_ROOT)


class WorkerProcess:
    """One worker process and its pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.jobs_done = 0

    @classmethod
    async def start(cls, env: dict[str, str]) -> WorkerProcess:
        command, cwd = worker_command()
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                cwd=cwd, env=env)
        except OSError as exc:
            raise MediaError(f"cannot start an image worker: {exc}") from None
        worker = cls(proc)
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                hello = await worker.receive()
            if hello != {"ready": True, "pid": proc.pid}:
                raise WorkerMessageError(f"greeting {hello!r}")
        except (TimeoutError, WorkerLostError, WorkerMessageError) as exc:
            await worker.stop(0)
            raise MediaError(f"the image worker did not start: {type(exc).__name__} {exc}"
                             ) from None
        return worker

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def call(self, message: bytes) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(message)
            await self.proc.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:  # RuntimeError: transport closed
            raise WorkerLostError(str(exc)) from None
        return await self.receive()

    async def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            length = body_length(await self.proc.stdout.readexactly(4))
            return decode(await self.proc.stdout.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise WorkerLostError(str(exc)) from None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # already reaped
            self.proc.kill()

    async def stop(self, grace_s: float) -> None:
        """End of input, `grace_s` to exit, then SIGKILL; reaped either way."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), grace_s)
        except TimeoutError:
            self.kill()
            await self.proc.wait()
