"""The one-file child dies with its launcher: the kernel's parent-death signal, for real.

A launcher and its child are modelled with two Python processes (the same
executable, as the bootloader and its child are); the child pretends to be
frozen the way PyInstaller's bootloader makes it (``_PYI_APPLICATION_HOME_DIR``
= ``sys._MEIPASS``).  tests/packaging/test_frozen.py does the same against
the real one-file executable.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.system.bootloader import (
    ORPHANED_EXIT,
    STALE_AFTER_S,
    onefile_child,
    parent_runs_same_executable,
    remove_stale_extractions,
)
from tests.support.components import REPO

#: The child: frozen in all but name, it binds itself to its parent and says so.
_CHILD = r"""
import os, sys, time
sys.frozen = True
sys._MEIPASS = os.environ["_PYI_APPLICATION_HOME_DIR"]
launcher = int(os.environ["LAUNCHER_PID"])
while os.environ.get("ORPHAN") and os.getppid() == launcher:
    time.sleep(0.01)  # the race: the launcher dies before the child binds itself
from appliance.system.bootloader import die_with_bootloader
die_with_bootloader()
print("bound", os.getpid(), flush=True)
time.sleep(600)
"""

#: The launcher: starts the child on our stdout, then waits for it (or, for the
#: race, leaves at once).
_LAUNCHER = r"""
import os, subprocess, sys
env = {**os.environ, "LAUNCHER_PID": str(os.getpid())}
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=env)
if not os.environ.get("ORPHAN"):
    child.wait()
"""


def _launch(tmp_path: Path, orphan: bool) -> subprocess.Popen[str]:
    env = {**os.environ, "_PYI_APPLICATION_HOME_DIR": str(tmp_path)}
    if orphan:
        env["ORPHAN"] = "1"
    return subprocess.Popen([sys.executable, "-c", _LAUNCHER, _CHILD], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _read_to_eof(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """Everything on the shared pipe until its last writer (the child) is gone."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        assert ready, f"the child still runs after {timeout_s} s: {out!r}"
        chunk = os.read(fd, 4096)
        if not chunk:
            return out.decode()
        out += chunk


def test_the_child_dies_when_its_launcher_is_sigkilled(tmp_path: Path) -> None:
    launcher = _launch(tmp_path, orphan=False)
    try:
        assert launcher.stdout is not None
        line = launcher.stdout.readline()
        assert line.startswith("bound "), line
        child = os.pidfd_open(int(line.split()[1]))
        try:
            launcher.kill()  # what a supervisor's SIGKILL does to the bootloader
            launcher.wait()
            # A pidfd turns readable when its process has exited.
            assert select.select([child], [], [], 30)[0], "the child outlived its launcher"
        finally:
            os.close(child)
        assert _read_to_eof(launcher, 30) == ""
    finally:
        launcher.kill()
        launcher.wait()
        launcher.stdout and launcher.stdout.close()


def test_a_child_whose_launcher_died_before_it_was_bound_exits_at_once(tmp_path: Path) -> None:
    launcher = _launch(tmp_path, orphan=True)
    try:
        out = _read_to_eof(launcher, 30)
    finally:
        launcher.kill()
        launcher.wait()
        launcher.stdout and launcher.stdout.close()
    assert "the one-file executable's launcher is gone; exiting" in out
    assert "bound" not in out


def test_not_frozen_nothing_happens() -> None:
    assert not onefile_child()
    done = subprocess.run(
        [sys.executable, "-c", "from appliance.system.bootloader import die_with_bootloader;"
                               "die_with_bootloader(); print('still here')"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout == "still here\n"


def test_the_parent_is_recognised_by_its_executable() -> None:
    same = subprocess.run(
        [sys.executable, "-c", "import os; from appliance.system.bootloader import"
                               " parent_runs_same_executable as p; print(p(os.getppid()))"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert same.stdout == "True\n"  # python started by python
    other = subprocess.run(
        ["sh", "-c", f"{sys.executable} -c 'import os; from appliance.system.bootloader import"
                     f" parent_runs_same_executable as p; print(p(os.getppid()))'; true"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert other.stdout == "False\n"  # python started by sh
    assert not parent_runs_same_executable(1)
    assert not parent_runs_same_executable(0)
    assert not parent_runs_same_executable(2**22 + 1)  # above pid_max: no such process


def test_an_orphan_exit_status_is_distinct() -> None:
    assert ORPHANED_EXIT not in (0, 1, 2, 3, 4)  # the CLI's own codes


def test_stale_extractions_are_removed_and_live_ones_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What SIGKILLed runs left in the shared TMPDIR goes; what runs stays."""
    ours, old, young, used, other = (tmp_path / name for name in (
        "_MEIours", "_MEIold", "_MEIyoung", "_MEIused", "unrelated"))
    for directory in (ours, old, young, used, other):
        directory.mkdir()
        (directory / "libpython.so").write_bytes(b"x" * 1000)
    now = ours.stat().st_mtime  # as the function itself learns the time
    for directory in (old, used, other):
        os.utime(directory, (now - 2 * STALE_AFTER_S, now - 2 * STALE_AFTER_S))
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(ours), raising=False)
    monkeypatch.setenv("_PYI_APPLICATION_HOME_DIR", str(ours))
    # A one-file run still going on from `used`: its child names it (as the bootloader does).
    runner = subprocess.Popen(["sleep", "60"],
                              env={**os.environ, "_PYI_APPLICATION_HOME_DIR": str(used)})
    try:
        # Until the child has exec'd, /proc shows the environment it forked with (ours):
        # wait for the one it runs with (a loaded machine took long enough to see it).
        environ = Path(f"/proc/{runner.pid}/environ")
        deadline = time.monotonic() + 10
        while str(used).encode() not in environ.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert remove_stale_extractions(now) == [old]
    finally:
        runner.kill()
        runner.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "_MEIours", "_MEIused", "_MEIyoung", "unrelated"]


def test_unfrozen_nothing_is_removed(tmp_path: Path) -> None:
    assert remove_stale_extractions(tmp_path.stat().st_mtime + 1e6) == []
