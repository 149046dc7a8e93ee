"""A worker process driven by hand: what it says to a server that sends it nonsense."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.media.images.protocol import (
    LENGTH,
    PARENT_PID_ENV,
    TEST_HOOKS_ENV,
    body_length,
    decode,
    encode,
)
from appliance.media.images.worker import ORPHANED_EXIT
from tests.media.images import corpus

REPO = Path(__file__).resolve().parents[3]
LIMITS = [64_000_000, 16384, 1000]


class Worker:
    def __init__(self, **env: str) -> None:
        environ = {k: v for k, v in os.environ.items() if k != TEST_HOOKS_ENV}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.media.images.worker"], cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**environ, PARENT_PID_ENV: str(os.getpid()), **env})

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        return decode(self.proc.stdout.read(body_length(self.proc.stdout.read(4))))

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        self.send_raw(encode(message))
        return self.receive()

    def finish(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=10)


@pytest.fixture
def worker() -> Iterator[Worker]:
    started = Worker()
    try:
        assert started.receive() == {"ready": True, "pid": started.proc.pid}
        yield started
    finally:
        started.proc.kill()
        started.proc.wait()
        for pipe in (started.proc.stdin, started.proc.stdout, started.proc.stderr):
            if pipe is not None:
                pipe.close()


def test_a_job_is_answered_and_the_end_of_input_ends_the_worker(worker: Worker,
                                                                tmp_path: Path) -> None:
    src = corpus.animated_gif(tmp_path / "a.gif")
    answer = worker.ask({"op": "probe", "src": str(src), "limits": LIMITS})
    assert answer == {"info": {"format": "GIF", "mime": "image/gif", "width": 120,
                               "height": 80, "frames": 3}}
    text = tmp_path / "t.png"
    text.write_text("hello")
    assert "not a JPEG" in worker.ask({"op": "probe", "src": str(text),
                                       "limits": LIMITS})["refused"]
    assert worker.finish() == 0


@pytest.mark.parametrize("job", [
    {"op": "probe", "src": "relative/path.png", "limits": LIMITS},
    {"op": "sanitize", "src": "/etc/hostname", "dst": "out.png", "limits": LIMITS},
    {"op": "probe", "src": "/etc/hostname", "limits": [0, 0, 0]},
    {"op": "thumbnail", "src": "/a", "dst": "/b", "size": 10**6, "fmt": "webp",
     "square": False, "limits": LIMITS},
    {"op": "unlink", "src": "/etc/passwd"},
    {"op": "sleep", "value": 1},  # a test hook, without the test environment
])
def test_a_bad_job_fails_and_the_worker_serves_the_next(worker: Worker, tmp_path: Path,
                                                        job: dict[str, Any]) -> None:
    assert "failed" in worker.ask(job)
    src = corpus.animated_gif(tmp_path / "a.gif")
    assert "info" in worker.ask({"op": "probe", "src": str(src), "limits": LIMITS})


@pytest.mark.parametrize("raw", [LENGTH.pack(1 << 30), LENGTH.pack(5) + b"[1,2]",
                                 LENGTH.pack(3) + b"\xff\xfe\xfd"])
def test_a_corrupt_stream_ends_the_worker(worker: Worker, raw: bytes) -> None:
    worker.send_raw(raw)
    assert worker.finish() == 2


def test_a_worker_whose_server_is_gone_exits_at_once() -> None:
    orphan = Worker(**{PARENT_PID_ENV: "1"})  # "started by" a process that is not its parent
    out, err = orphan.proc.communicate(timeout=10)
    assert orphan.proc.returncode == ORPHANED_EXIT
    assert out == b""
    assert b"is gone" in err
