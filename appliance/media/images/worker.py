"""An image worker process: reads jobs on stdin, runs the codec, answers on stdout.

Started by `pool.ImagePool` as ``python -m appliance.media.images.worker`` from the
sources, or as ``tidings __tidings-image-worker__`` from the one-file executable
(packaging/entry.py dispatches on that argument before importing the CLI).  Why not
`multiprocessing`, and how the process is bound to the server, is in `pool`'s docstring.

At start, before anything else:

* ``PR_SET_PDEATHSIG`` = SIGKILL: the kernel kills this worker when the server dies,
  SIGKILLed included; then the parent is checked to still be the server that started
  us (`PARENT_PID_ENV`), which closes the window between fork and prctl;
* ``RLIMIT_AS`` (`MEMORY_ENV`, at least 1 GiB): a second guard behind the header
  checks.  An image that still needs more makes Pillow's allocation fail: the job is
  refused ("needs too much memory") and the worker lives on; a crash in a C decoder
  kills only this process, and the pool fails only that job;
* ``nice`` 10: on a busy machine the server's event loop gets the CPU first;
* file descriptor 1 is pointed at stderr: a stray print() cannot corrupt the
  protocol, which keeps a private copy of the original stdout.

Then one job at a time until stdin ends (the pool closed it, or the server is gone).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import sys
import time
from typing import Any, BinaryIO

from appliance.errors import ImageRefusedError, MediaError
from appliance.media.images import codec
from appliance.media.images.protocol import (
    MEMORY_ENV,
    MIN_WORKER_MEMORY_BYTES,
    OPS,
    PARENT_PID_ENV,
    TEST_HOOKS_ENV,
    TEST_OPS,
    WorkerMessageError,
    body_length,
    decode,
    encode,
    info_to_wire,
    limits_from_wire,
    thumbnail_args,
)
from appliance.system.bootloader import set_parent_death_signal

log = logging.getLogger(__name__)

#: Exit status when the server that started us is already gone.
ORPHANED_EXIT = 70
#: Workers yield the CPU to the server's event loop (nice(2)): a busy machine delays
#: thumbnails, not message delivery.
WORKER_NICENESS = 10


def main() -> int:
    """The worker's life; returns its exit status."""
    _bind_to_parent()
    _limit_memory()
    os.nice(WORKER_NICENESS)
    jobs = sys.stdin.buffer
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _send(answers, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            request = _receive(jobs)
        except WorkerMessageError as exc:
            log.error("image worker: bad job from the server: %s", exc)
            return 2
        if request is None:
            return 0
        _send(answers, handle(request))


def _bind_to_parent() -> None:
    if sys.platform.startswith("linux"):
        set_parent_death_signal(signal.SIGKILL)
    expected = os.environ.get(PARENT_PID_ENV, "")
    if expected.isdigit() and os.getppid() != int(expected):
        os.write(2, b"tidings image worker: the server that started it is gone; exiting\n")
        os._exit(ORPHANED_EXIT)


def _limit_memory() -> None:
    wanted = os.environ.get(MEMORY_ENV, "")
    limit = max(MIN_WORKER_MEMORY_BYTES, int(wanted) if wanted.isdigit() else 0)
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _receive(source: BinaryIO) -> dict[str, Any] | None:
    prefix = source.read(4)
    if not prefix:
        return None
    if len(prefix) < 4:
        raise WorkerMessageError("stdin ended inside a length")
    length = body_length(prefix)
    body = source.read(length)
    if len(body) < length:
        raise WorkerMessageError("stdin ended inside a message")
    return decode(body)


def _send(sink: BinaryIO, message: dict[str, Any]) -> None:
    sink.write(encode(message))
    sink.flush()


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """One job -> its answer: ``{"info": ...}``, ``{"refused": reason}`` (the image's
    fault) or ``{"failed": reason}`` (ours: a path not writable, a bad job)."""
    try:
        return {"info": info_to_wire(_run(request))}
    except ImageRefusedError as exc:
        return {"refused": exc.reason}
    except MemoryError:
        return {"refused": "the image needs too much memory"}
    except (MediaError, WorkerMessageError) as exc:
        return {"failed": str(exc)}
    except Exception as exc:  # a codec bug: this job fails, the worker serves the next
        log.exception("image worker: job failed")
        return {"failed": f"internal error ({type(exc).__name__})"}


def _run(request: dict[str, Any]) -> codec.ImageInfo:
    op = request.get("op")
    if op in TEST_OPS and os.environ.get(TEST_HOOKS_ENV) == "1":
        return _test_hook(op, request.get("value"))
    if op not in OPS:
        raise WorkerMessageError(f"unknown job {op!r}")
    src, dst = request.get("src"), request.get("dst")
    if not isinstance(src, str) or not os.path.isabs(src):
        raise WorkerMessageError("src must be an absolute path")
    limits = limits_from_wire(request.get("limits"))
    if op == "probe":
        return codec.probe(src, limits)
    if not isinstance(dst, str) or not os.path.isabs(dst):
        raise WorkerMessageError("dst must be an absolute path")
    if op == "sanitize":
        return codec.sanitize(src, dst, limits)
    size, fmt, square, draft = thumbnail_args(request)
    return codec.thumbnail(src, dst, size=size, fmt=fmt, square=square, limits=limits,
                           use_draft=draft)


def _test_hook(op: str, value: object) -> codec.ImageInfo:
    """Stand-ins for a slow image and a huge one (`TEST_HOOKS_ENV` only)."""
    if not isinstance(value, int | float) or value < 0:
        raise WorkerMessageError("test hook value")
    if op == "sleep":
        time.sleep(float(value))
    else:
        block = bytearray(int(value))  # MemoryError past RLIMIT_AS
        del block
    return codec.ImageInfo("PNG", "image/png", 1, 1, 1)


def run() -> int:
    """The process entry point (``-m`` here, packaging/entry.py frozen): logs to stderr."""
    logging.basicConfig(level=logging.INFO, format="tidings image worker: %(message)s")
    return main()


if __name__ == "__main__":
    raise SystemExit(run())
