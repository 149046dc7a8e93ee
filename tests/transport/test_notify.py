"""The sd_notify(3) client, against a real datagram socket as systemd listens on one."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.transport.notify import MAX_STATUS_CHARS, Notifier, watchdog_interval


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[socket.socket]:
    """systemd's end: a bound datagram socket (its path is `getsockname()`)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(10)
    try:
        yield sock
    finally:
        sock.close()


def _lines(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_reloading_stopping_and_status_are_one_datagram_each(
        systemd: socket.socket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": systemd.getsockname()})
    try:
        assert notifier.ready("listening on 127.0.0.1:1")
        assert _lines(systemd) == ["READY=1", "STATUS=listening on 127.0.0.1:1"]
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.reloading()
        reloading, stamp, status = _lines(systemd)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert (reloading, status) == ("RELOADING=1", "STATUS=reloading")
        # systemd >= 257 compares it with its own CLOCK_MONOTONIC, in microseconds.
        assert stamp.startswith("MONOTONIC_USEC=")
        assert before <= int(stamp.removeprefix("MONOTONIC_USEC=")) <= after
        assert notifier.stopping()
        assert _lines(systemd) == ["STOPPING=1", "STATUS=stopping"]
    finally:
        notifier.close()


def test_status_is_one_bounded_line(systemd: socket.socket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": systemd.getsockname()})
    try:
        # A newline would start a second KEY=VALUE line systemd would act on.
        assert notifier.status("3 connections\nREADY=1\x00" + "x" * 1000)
        [line] = _lines(systemd)
        assert line.startswith("STATUS=3 connections READY=1 x")
        assert len(line) == len("STATUS=") + MAX_STATUS_CHARS
    finally:
        notifier.close()


def test_abstract_socket_address(tmp_path: Path) -> None:
    name = f"tidings-test-{os.getpid()}-{tmp_path.name}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.status("abstract")
        assert _lines(sock) == ["STATUS=abstract"]
        notifier.close()


def test_the_variables_leave_the_environment_so_children_cannot_speak_for_the_unit(
        systemd: socket.socket) -> None:
    env = {"NOTIFY_SOCKET": systemd.getsockname(), "WATCHDOG_USEC": "2000000",
           "WATCHDOG_PID": str(os.getpid()), "PATH": "/bin"}
    notifier = Notifier(env)
    assert env == {"PATH": "/bin"}
    assert notifier.enabled
    assert notifier.watchdog_s == 1.0
    notifier.close()


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert notifier.watchdog_s is None


@pytest.mark.parametrize("raw", ["relative/path", "", "x"])
def test_a_notify_socket_that_is_no_address_is_ignored(raw: str) -> None:
    assert not Notifier({"NOTIFY_SOCKET": raw}).enabled


def test_a_vanished_socket_fails_quietly_and_recovers(tmp_path: Path) -> None:
    path = str(tmp_path / "gone")
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert not notifier.status("nobody listens")  # no exception
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(10)
        assert notifier.status("back")
        assert _lines(sock) == ["STATUS=back"]
    notifier.close()


def test_a_full_queue_drops_the_message_instead_of_blocking_the_loop(
        systemd: socket.socket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": systemd.getsockname()})
    try:
        start = time.monotonic()
        sent = [notifier.status(f"message {i}") for i in range(5000)]  # nobody reads
        assert not all(sent)  # the receiver's queue filled up ...
        assert time.monotonic() - start < 5  # ... and no call waited for room
    finally:
        notifier.close()


@pytest.mark.parametrize(("usec", "pid", "expected"), [
    ("20000000", None, 10.0),
    ("20000000", "", 10.0),
    ("20000000", "own", 10.0),
    ("20000000", "parent", 10.0),  # the one-file executable: systemd knows the bootloader
    ("20000000", "1", None),  # meant for another process
    ("20000000", "x1", None),
    (None, None, None),
    ("0", None, None),
    ("-5", None, None),
    ("999", None, None),  # below a millisecond: not systemd's
    ("99999999999999999999", None, None),  # absurd: not kept
    ("12abc", None, None),
])
def test_watchdog_interval_is_half_the_timeout_for_this_process_only(
        usec: str | None, pid: str | None, expected: float | None) -> None:
    own, parent = 4242, 4241
    pid = {"own": str(own), "parent": str(parent)}.get(pid or "", pid)
    assert watchdog_interval(usec, pid, (own, parent)) == expected


def test_watchdog_pings_from_the_event_loop(systemd: socket.socket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": systemd.getsockname(), "WATCHDOG_USEC": "40000"})
    assert notifier.watchdog_s == 0.02

    async def go() -> list[float]:
        pinger = asyncio.get_running_loop().create_task(notifier.watchdog())
        loop = asyncio.get_running_loop()
        stamps = []
        try:
            for _ in range(4):
                assert await loop.run_in_executor(None, _lines, systemd) == ["WATCHDOG=1"]
                stamps.append(time.monotonic())
        finally:
            pinger.cancel()
        return stamps

    stamps = asyncio.run(go())
    notifier.close()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 0.015  # every WATCHDOG_USEC/2, not as fast as it can


def test_no_watchdog_no_pings(systemd: socket.socket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": systemd.getsockname()})
    asyncio.run(notifier.watchdog())  # returns at once
    notifier.close()
