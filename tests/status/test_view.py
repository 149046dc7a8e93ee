"""`tidings status`'s verdict from a real server: running, stuck, unhealthy, killed, stopped."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from appliance.engine.clock import SystemClock
from appliance.status.probe import check_health
from appliance.status.report import STALE_INTERVALS, read_report, status_path
from appliance.status.view import (
    UNIT_PROPERTIES,
    UnitState,
    Verdict,
    gather,
    parse_unit,
    unit_state,
)
from tests.support.container import booted
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


def now() -> int:
    return SystemClock().wall_ms()


def no_unit() -> UnitState | None:
    return None


def test_no_report_is_not_running(data_dir: Path) -> None:
    view = gather(data_dir, now(), unit=no_unit)
    assert (view.verdict, view.exit_code) == (Verdict.NOT_RUNNING, 3)
    assert view.reason == f"no server has reported in {status_path(data_dir)}"
    # systemd says the unit is starting: say so rather than "not running".
    starting = UnitState("tidings.service", "activating", "start", 42)
    view = gather(data_dir, now(), unit=lambda: starting)
    assert (view.verdict, view.exit_code) == (Verdict.STARTING, 1)
    assert "tidings.service is activating" in view.reason


def test_running_then_stopped_cleanly(data_dir: Path) -> None:
    server = ServerProcess(data_dir)
    server.start()
    try:
        view = gather(data_dir, now(), unit=no_unit)
        assert (view.verdict, view.exit_code) == (Verdict.RUNNING, 0), view.reason
        assert view.health is not None
        assert view.health.ok
        assert view.report is not None
        assert view.report.main_listener() is not None
        doc = view.to_dict()
        assert doc["verdict"] == "running"
        assert doc["report"]["listeners"][0]["port"] == server.port
        assert doc["health"]["status"] == 200
    finally:
        server.stop()
    view = gather(data_dir, now(), unit=no_unit)
    assert (view.verdict, view.exit_code) == (Verdict.NOT_RUNNING, 3)
    assert view.reason.startswith("stopped at ")


def test_a_stuck_server_is_not_responding_then_unhealthy(data_dir: Path) -> None:
    server = ServerProcess(data_dir)
    server.start()
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)  # its loop runs no more: a stuck server
    try:
        report = read_report(data_dir)
        assert report is not None
        later = report.updated_ms + int(STALE_INTERVALS * report.interval_s * 1000) + 1000
        view = gather(data_dir, later, unit=no_unit)
        assert (view.verdict, view.exit_code) == (Verdict.NOT_RESPONDING, 1)
        assert f"pid {server.proc.pid} runs but has not reported" in view.reason
        assert view.health is None  # not asked: the report already says enough
        # A fresh report, but /v1/health is not answered (the TLS handshake waits).
        view = gather(data_dir, report.updated_ms,
                      probe=lambda host, port: check_health(host, port, timeout_s=0.5),
                      unit=no_unit)
        assert (view.verdict, view.exit_code) == (Verdict.UNHEALTHY, 1)
        assert view.reason == f"https://127.0.0.1:{server.port}/v1/health: no answer within 0.5 s"
    finally:
        server.proc.send_signal(signal.SIGCONT)
        server.stop()


def test_a_killed_server_is_not_running(data_dir: Path) -> None:
    server = ServerProcess(data_dir)
    server.start()
    assert server.proc is not None
    pid = server.proc.pid
    server.kill()
    view = gather(data_dir, now(), unit=no_unit)
    assert (view.verdict, view.exit_code) == (Verdict.NOT_RUNNING, 3)
    assert view.reason.startswith(f"pid {pid} is gone without a clean stop")


def test_an_unreadable_status_file_is_unknown(data_dir: Path) -> None:
    path = status_path(data_dir)
    path.parent.mkdir()
    os.mkfifo(path)
    view = gather(data_dir, now(), unit=no_unit)
    assert (view.verdict, view.exit_code) == (Verdict.UNKNOWN, 4)
    assert "not a regular file" in view.reason


def test_without_systemd_there_is_no_unit_state() -> None:
    if Path("/run/systemd/system").is_dir():
        pytest.skip("this machine runs systemd: the container test covers unit_state")
    assert unit_state() is None


def test_systemctl_show_is_read_as_systemd_writes_it(tmp_path: Path) -> None:
    """A real systemd (a booted container) describing a running unit and a missing one."""
    args = [arg for name in UNIT_PROPERTIES for arg in ("-p", name)]
    with booted("unit", log_dir=tmp_path) as box:
        journald = box.run(["systemctl", "show", *args, "systemd-journald.service"]).stdout
        missing_unit = box.run(["systemctl", "show", *args, "tidings.service"]).stdout
        box.run(["systemctl", "stop", "systemd-journald.service"])
        stopped = box.run(["systemctl", "show", *args, "systemd-journald.service"]).stdout
    state = parse_unit("systemd-journald.service", journald)
    assert state is not None
    assert (state.active, state.sub) == ("active", "running")
    assert state.main_pid > 1
    assert parse_unit("tidings.service", missing_unit) is None
    assert parse_unit("systemd-journald.service", stopped) == UnitState(
        "systemd-journald.service", "inactive", "dead", 0)
