"""`tidings status`'s text."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.status.probe import Health
from appliance.status.report import Certificate, Listener, ServerState, StatusReport
from appliance.status.text import certificate_line, duration, lines
from appliance.status.view import StatusView, UnitState, Verdict

NOW = 1_800_000_000_000
DAY_MS = 86_400_000


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (42.9, "42 s"), (60, "1 min"), (125, "2 min 5 s"), (3600, "1 h"),
    (7500, "2 h 5 min"), (90061, "1 d 1 h"), (-5, "0 s")])
def test_durations(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_certificate_lines() -> None:
    assert certificate_line(Certificate("self-signed"), NOW) == (
        "self-signed, expiry unknown; renewal none")
    assert certificate_line(Certificate("provided", NOW - DAY_MS, "manual"), NOW) == (
        "provided, EXPIRED at 2027-01-14T08:00:00+00:00; renewal manual")
    assert certificate_line(Certificate("acme", NOW + 57 * DAY_MS, "failing", 3, "DNS"),
                            NOW) == ("acme, expires 2027-03-13T08:00:00+00:00 (57 days left);"
                                     " renewal failing (3 attempts; last error: DNS)")


def test_a_running_server() -> None:
    report = StatusReport(
        pid=42, pid_start=1, version="0.2.0", state=ServerState.RUNNING,
        started_ms=NOW - 7_500_000, updated_ms=NOW - 2000, uptime_s=7498, interval_s=5,
        data_dir="/var/lib/tidings",
        listeners=(Listener("main", "0.0.0.0", 443, True), Listener("redirect", "0.0.0.0", 80)),
        connections=12, by_protocol={"native": 10, "websocket": 1, "http2": 1, "http1": 0},
        commit_queue=3, store_backend="sqlite",
        store_location="SQLite /var/lib/tidings/tidings.sqlite3",
        certificate=Certificate("acme", NOW + 57 * DAY_MS, "automatic"))
    view = StatusView(Verdict.RUNNING, "answering", Path("/var/lib/tidings/run/status.json"),
                      report, Health("https://127.0.0.1:443/v1/health", True, 200, 4.2),
                      UnitState("tidings.service", "active", "running", 41))
    assert lines(view, NOW) == [
        "tidings 0.2.0: running (pid 42, up 2 h 5 min)",
        "  why          answering",
        "  health       https://127.0.0.1:443/v1/health: 200 ok in 4.2 ms",
        "  systemd      tidings.service: active (running)",
        "  listeners    0.0.0.0:443 (main, from systemd), 0.0.0.0:80 (redirect)",
        "  connections  12 open: http2 1, native 10, websocket 1",
        "  queue        3 messages waiting for commit",
        "  store        SQLite /var/lib/tidings/tidings.sqlite3",
        "  certificate  acme, expires 2027-03-13T08:00:00+00:00 (57 days left); renewal"
        " automatic",
        "  reported     2 s ago at 2027-01-15T07:59:58+00:00 (every 5 s)",
        "  status file  /var/lib/tidings/run/status.json",
    ]
    gone = StatusView(Verdict.NOT_RUNNING, "pid 42 is gone", view.status_file, report)
    assert lines(gone, NOW) == [
        "tidings 0.2.0: not running", "  why          pid 42 is gone",
        "  last report  2027-01-15T07:59:58+00:00 by pid 42 (tidings 0.2.0)",
        "  status file  /var/lib/tidings/run/status.json"]
