"""Running the checks: every check once, a check that cannot look is a failure, the tally."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.doctor.model import Finding, Subject, Verdict
from appliance.doctor.registry import CHECKS, examine, exit_code, lines, run_checks
from appliance.doctor.store import DURABILITY, check_durability
from appliance.engine.clock import SystemClock
from tests.support.server import ServerProcess


def subject(data_dir: Path, **settings: object) -> Subject:
    return examine(load_config(None, {"storage.data_dir": data_dir, **settings}),
                   SystemClock().wall_ms())


def test_every_check_is_run_once_in_order(data_dir: Path) -> None:
    found = run_checks(subject(data_dir))
    assert [f.check for f in found] == [name for name, _ in CHECKS] == [
        "certificate", "store", "durability", "disk", "fd-limit", "clock", "ports",
        "permissions", "images"]


def test_a_check_that_cannot_look_is_a_failure_saying_why(data_dir: Path, tmp_path: Path
                                                          ) -> None:
    # A real MariaDB location with no server behind it: the check raises, the run goes on.
    away = subject(data_dir, **{"storage.database": str(tmp_path / "mysqld.sock"),
                                "storage.timeout_s": 1})

    def broken(_: Subject) -> Finding:
        raise ValueError("a bug")

    found = run_checks(away, ((DURABILITY, check_durability), ("broken", broken)))
    assert found[0].verdict is Verdict.FAIL
    assert found[0].summary.startswith("could not check: ")
    assert found[1] == Finding("broken", Verdict.FAIL,
                               "the check itself failed: ValueError: a bug")
    assert exit_code(found) == 1


def test_warnings_do_not_fail_the_command() -> None:
    found = [Finding("a", Verdict.OK, "fine"), Finding("bb", Verdict.WARN, "hmm", "do this")]
    assert exit_code(found) == 0
    assert lines(found) == ["ok    a   fine", "warn  bb  hmm", "          fix: do this",
                            "2 checks: 1 ok, 1 warn, 0 fail"]
    failing = [*found, Finding("c", Verdict.FAIL, "broken", "fix it")]
    assert lines(failing)[-3:] == ["FAIL  c   broken", "          fix: fix it",
                                   "3 checks: 1 ok, 1 warn, 1 fail"]


@pytest.mark.slow
def test_only_a_running_servers_report_is_used(data_dir: Path) -> None:
    server = ServerProcess(data_dir)
    server.start()
    try:
        running = subject(data_dir)
        assert running.report is not None
        assert server.proc is not None
        assert running.report.pid == server.proc.pid
    finally:
        server.stop()
    assert subject(data_dir).report is None  # stopped: the configuration alone counts
    assert not subject(data_dir).installed
