"""Disk, file-descriptor limit and clock checks under real conditions: small tmpfs mounts,
limits set on live processes with prlimit, and systemd's own clock verdict."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.doctor.host import (
    FD_WARN,
    check_clock,
    check_disk,
    check_fd_limit,
    kernel_clock,
    nofile_limits,
)
from appliance.doctor.model import Subject, Verdict
from appliance.doctor.registry import examine
from appliance.engine.clock import SystemClock
from tests.support.components import missing
from tests.support.container import booted
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


def subject(data_dir: Path) -> Subject:
    return Subject(load_config(None, {"storage.data_dir": data_dir}), SystemClock().wall_ms())


@contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A real, small file system at `where` (a data directory on a nearly full disk)."""
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        missing(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.mark.parametrize(("size", "verdict", "said"), [
    ("4m", Verdict.FAIL, "0.00 GiB free of 0.00 GiB (100.0 %)"),
    ("600m", Verdict.WARN, "0.59 GiB free of 0.59 GiB (100.0 %)"),
    ("3g", Verdict.OK, "3.00 GiB free of 3.00 GiB (100.0 %)"),
])
def test_free_space(tmp_path: Path, size: str, verdict: Verdict, said: str) -> None:
    with tmpfs(tmp_path / "fs", f"size={size}") as fs:
        found = check_disk(subject(fs / "data"))  # not made yet: its file system counts
    assert found.verdict is verdict, found
    assert found.summary.startswith(f"{fs}: {said}")
    if verdict is not Verdict.OK:
        assert "free space on that file system" in found.fix


def test_no_inodes_left(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "size=64m,nr_inodes=200") as fs:
        for n in range(400):
            try:
                (fs / f"f{n}").touch()
            except OSError:
                break
        found = check_disk(subject(fs))
    assert found.verdict is Verdict.FAIL
    assert found.figures["free_inodes_percent"] < 1


def doctor_json(data_dir: Path, nofile: tuple[int, int]) -> dict[str, object]:
    """`tidings doctor --json` run with this RLIMIT_NOFILE."""
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "doctor", "--json", "--data-dir", str(data_dir)],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile))
    checks = json.loads(done.stdout)["checks"]
    return next(c for c in checks if c["check"] == "fd-limit")


def test_this_process_limit_when_no_server_runs(data_dir: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    low = doctor_json(data_dir, (1024, hard))
    assert low["verdict"] == "warn"
    assert low["summary"].startswith("this process (no server running): file descriptors"
                                     " soft limit 1024")
    if hard == resource.RLIM_INFINITY or hard > FD_WARN:  # this host allows a good limit
        assert doctor_json(data_dir, (FD_WARN + 1, hard))["verdict"] == "ok"


@pytest.mark.slow
def test_the_running_servers_limit(data_dir: Path) -> None:
    if shutil.which("prlimit") is None or os.geteuid() != 0:
        missing("prlimit (util-linux) and root are needed to set a live process's limits")
    server = ServerProcess(data_dir)
    server.start()
    assert server.proc is not None
    pid = server.proc.pid
    try:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # the server inherited it
        subprocess.run(["prlimit", f"--pid={pid}", "--nofile=4096:"], check=True)  # soft only
        assert nofile_limits(pid) == (4096, -1 if hard == resource.RLIM_INFINITY else hard)
        seen = examine(load_config(None, {"storage.data_dir": data_dir}),
                       SystemClock().wall_ms())
        found = check_fd_limit(seen)
        assert found.verdict is Verdict.WARN
        assert found.summary.startswith(f"the running server (pid {pid}): file descriptors"
                                        " soft limit 4096, hard ")
        assert "LimitNOFILE=1048576" in found.fix
        if hard == resource.RLIM_INFINITY or hard > FD_WARN:  # this host allows a good limit
            subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={FD_WARN + 1}:"], check=True)
            assert check_fd_limit(seen).verdict is Verdict.OK
    finally:
        server.stop()


def test_clock_verdict_follows_the_kernel() -> None:
    kernel = kernel_clock()
    assert kernel is not None  # adjtimex(2) read-only works unprivileged, in containers too
    synced, maxerror_us, _ = kernel
    assert synced == (maxerror_us < 16_000_000)
    found = check_clock(subject(Path("/nonexistent")))
    if not Path("/run/systemd/system").is_dir():
        assert found.figures["source"].startswith("adjtimex(2)")
    assert found.verdict is (Verdict.OK if found.figures["synchronised"] else Verdict.WARN)


@pytest.mark.slow
def test_adjtimex_agrees_with_systemd(tmp_path: Path) -> None:
    """systemd-timedated's NTPSynchronized, asked in a booted container (same kernel)."""
    with booted("clock", log_dir=tmp_path) as box:
        done = box.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
        kernel = kernel_clock()
    assert kernel is not None
    assert done.stdout.strip() == ("yes" if kernel[0] else "no")
