"""`tidings status`: the status file, checked against the process, its health and systemd.

The file alone can lie: a server killed with SIGKILL leaves its last report
behind, and a stuck event loop stops rewriting it while the process lives.
So the verdict needs all three: the pid (and its start time) still running,
a report younger than `STALE_INTERVALS` intervals, and a live answer from
``/v1/health``.  Exit codes follow the LSB init-script convention for
``status``: 0 running, 3 not running, 4 unknown; 1 for running but unwell.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from appliance.errors import LifecycleError, StatusFileError
from appliance.status import process
from appliance.status.probe import Health, check_health
from appliance.status.report import (
    ServerState,
    StatusReport,
    iso,
    read_report,
    status_path,
    to_json,
)
from appliance.system import layout
from appliance.system.systemd import systemctl, systemd_running


class Verdict(StrEnum):
    """What `tidings status` concludes."""

    RUNNING = "running"
    STARTING = "starting"
    STOPPING = "stopping"
    NOT_RESPONDING = "not responding"
    UNHEALTHY = "unhealthy"
    NOT_RUNNING = "not running"
    UNKNOWN = "unknown"


#: LSB init-script ``status`` exit codes: 0 running, 3 not running, 4 unknown; 1 otherwise.
EXIT_CODES = {Verdict.RUNNING: 0, Verdict.NOT_RUNNING: 3, Verdict.UNKNOWN: 4}


@dataclass(frozen=True, slots=True)
class UnitState:
    """systemd's view of the service unit."""

    unit: str
    active: str  # ActiveState: active, activating, inactive, failed...
    sub: str  # SubState: running, dead, auto-restart...
    main_pid: int


@dataclass(frozen=True, slots=True)
class StatusView:
    """Everything `tidings status` shows."""

    verdict: Verdict
    reason: str
    status_file: Path
    report: StatusReport | None = None
    health: Health | None = None
    unit: UnitState | None = None

    @property
    def exit_code(self) -> int:
        """The command's exit status (see `EXIT_CODES`)."""
        return EXIT_CODES.get(self.verdict, 1)

    def to_dict(self) -> dict[str, Any]:
        """For ``--json``: the verdict, and the report as the server wrote it."""
        return {
            "verdict": self.verdict.value, "reason": self.reason, "exit_code": self.exit_code,
            "status_file": str(self.status_file),
            "report": json.loads(to_json(self.report)) if self.report is not None else None,
            "health": None if self.health is None else {
                "url": self.health.url, "ok": self.health.ok, "status": self.health.status,
                "elapsed_ms": self.health.elapsed_ms, "error": self.health.error or None},
            "systemd": None if self.unit is None else {
                "unit": self.unit.unit, "active_state": self.unit.active,
                "sub_state": self.unit.sub, "main_pid": self.unit.main_pid},
        }


#: What `unit_state` asks systemctl.
UNIT_PROPERTIES = ("LoadState", "ActiveState", "SubState", "MainPID")


def unit_state(unit: str = layout.SERVICE_UNIT) -> UnitState | None:
    """The unit's state when systemd runs this machine and knows the unit, else None."""
    if not systemd_running():
        return None
    args = [arg for name in UNIT_PROPERTIES for arg in ("-p", name)]
    try:
        done = systemctl("show", *args, unit, check=False, timeout_s=10)
    except LifecycleError:
        return None
    return parse_unit(unit, done.stdout) if done.returncode == 0 else None


def parse_unit(unit: str, shown: str) -> UnitState | None:
    """``systemctl show -p ...`` output as a `UnitState`; None for a unit systemd lacks."""
    props = dict(line.partition("=")[::2] for line in shown.splitlines()[:64])
    if props.get("LoadState") in (None, "", "not-found"):
        return None
    pid = props.get("MainPID", "0")
    return UnitState(unit, props.get("ActiveState", ""), props.get("SubState", ""),
                     int(pid) if pid.isdigit() and len(pid) < 10 else 0)


def gather(data_dir: Path, now_ms: int, *,
           probe: Callable[[str, int], Health] = check_health,
           unit: Callable[[], UnitState | None] = unit_state) -> StatusView:
    """Read the status file of `data_dir` and check it; never raises for a server's state."""
    path = status_path(data_dir)
    systemd = unit()
    try:
        report = read_report(data_dir)
    except StatusFileError as exc:
        return StatusView(Verdict.UNKNOWN, str(exc), path, unit=systemd)
    if report is None:
        if systemd is not None and systemd.active in ("active", "activating", "reloading"):
            return StatusView(Verdict.STARTING, f"{systemd.unit} is {systemd.active} but no"
                              f" server has reported in {path} yet", path, unit=systemd)
        return StatusView(Verdict.NOT_RUNNING, f"no server has reported in {path}", path,
                          unit=systemd)
    verdict, reason = _judge(report, now_ms)
    health = None
    main = report.main_listener()
    if verdict is Verdict.RUNNING and main is not None:
        health = probe(main.host, main.port)
        if not health.ok:
            verdict, reason = Verdict.UNHEALTHY, f"{health.url}: {health.error}"
    return StatusView(verdict, reason, path, report, health, systemd)


def _judge(report: StatusReport, now_ms: int) -> tuple[Verdict, str]:
    """The verdict the report and the process allow, before asking the server."""
    if report.state is ServerState.STOPPED:
        return Verdict.NOT_RUNNING, f"stopped at {iso(report.updated_ms)}"
    if not process.alive(report.pid, report.pid_start):
        return Verdict.NOT_RUNNING, (f"pid {report.pid} is gone without a clean stop (crashed"
                                     f" or killed); last report at {iso(report.updated_ms)}")
    if report.stale(now_ms):
        age = (now_ms - report.updated_ms) / 1000
        return Verdict.NOT_RESPONDING, (f"pid {report.pid} runs but has not reported for"
                                        f" {age:.0f} s (every {report.interval_s:g} s expected):"
                                        " its event loop may be stuck")
    if report.state is ServerState.STOPPING:
        return Verdict.STOPPING, "draining connections before it exits"
    if report.store_failing:
        return Verdict.UNHEALTHY, ("the store refuses writes: senders hear FAILED until it is"
                                   " back (see the server's log)")
    if report.main_listener() is None:
        return Verdict.UNHEALTHY, "the report names no main listener"
    return Verdict.RUNNING, "answering"
