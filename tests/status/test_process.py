"""Telling a live server from a dead one, and from a later process that got its pid."""

from __future__ import annotations

import os
import subprocess
import sys

from appliance.status.process import alive, own_start_ticks, start_ticks


def test_this_process_is_alive_with_its_own_start_time() -> None:
    started = own_start_ticks()
    assert started > 0
    assert start_ticks(os.getpid()) == started
    assert alive(os.getpid(), started)
    assert alive(os.getpid(), 0)  # unknown start time: the pid alone


def test_a_reused_pid_is_not_the_server() -> None:
    # Same pid, another start time: the kernel gave the pid to someone else.
    assert not alive(os.getpid(), own_start_ticks() + 1)


def test_exited_and_zombie_processes_are_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    pid = child.pid
    started = start_ticks(pid)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert started is not None
    assert not alive(pid, started)
    child.wait()
    assert start_ticks(pid) is None
    assert not alive(pid, started)


def test_a_command_name_with_parentheses_and_spaces_is_parsed() -> None:
    # The comm field may hold ") x (": fields are counted from the last ')'.
    code = ("import sys, time; open('/proc/self/comm', 'w').write('a) b (c');"
            " print('ready', flush=True); time.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        with open(f"/proc/{child.pid}/stat") as f:
            assert "(a) b (c)" in f.read()
        started = start_ticks(child.pid)
        assert started is not None
        assert started >= own_start_ticks()
        assert alive(child.pid, started)
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
