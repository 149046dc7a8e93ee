"""The list of checks, running them, and what `tidings doctor` prints."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from appliance.config import ApplianceConfig
from appliance.doctor import certificate, images, permissions, ports
from appliance.doctor.certificate import check_certificate
from appliance.doctor.host import CLOCK, DISK, FD_LIMIT, check_clock, check_disk, check_fd_limit
from appliance.doctor.images import check_images
from appliance.doctor.model import Check, Finding, Subject, Verdict
from appliance.doctor.permissions import check_permissions
from appliance.doctor.ports import check_ports
from appliance.doctor.store import DURABILITY, STORE, check_durability, check_store
from appliance.errors import ApplianceError, StatusFileError
from appliance.status import process
from appliance.status.report import ServerState, StatusReport, read_report
from appliance.system import layout

log = logging.getLogger(__name__)

#: Every check, in the order they are shown.
CHECKS: Final[tuple[tuple[str, Check], ...]] = (
    (certificate.NAME, check_certificate),
    (STORE, check_store),
    (DURABILITY, check_durability),
    (DISK, check_disk),
    (FD_LIMIT, check_fd_limit),
    (CLOCK, check_clock),
    (ports.NAME, check_ports),
    (permissions.NAME, check_permissions),
    (images.NAME, check_images),
)


def running_report(data_dir: Path) -> StatusReport | None:
    """The report of the server running on `data_dir`; None when none runs (or it
    cannot be read: the checks then look at the configuration alone)."""
    try:
        report = read_report(data_dir)
    except StatusFileError as exc:
        log.debug("status file not used: %s", exc)
        return None
    if report is None or report.state is ServerState.STOPPED:
        return None
    return report if process.alive(report.pid, report.pid_start) else None


def installed(data_dir: Path) -> bool:
    """True on a host the installer set up, for this data directory."""
    return layout.BIN.exists() and data_dir.resolve() == layout.DATA_DIR


def examine(config: ApplianceConfig, now_ms: int, config_file: Path | None = None) -> Subject:
    """The subject of the checks for this configuration."""
    data_dir = config.storage.data_dir
    return Subject(config, now_ms, running_report(data_dir), installed(data_dir), config_file)


def run_checks(subject: Subject, checks: tuple[tuple[str, Check], ...] = CHECKS
               ) -> list[Finding]:
    """Every check's finding; a check that cannot look is a failure saying why."""
    found = []
    for name, check in checks:
        try:
            found.append(check(subject))
        except (ApplianceError, OSError) as exc:
            found.append(Finding(name, Verdict.FAIL, f"could not check: {exc}"))
        except Exception as exc:  # one broken check must not hide the others
            log.debug("check %s failed", name, exc_info=True)
            found.append(Finding(name, Verdict.FAIL,
                                 f"the check itself failed: {type(exc).__name__}: {exc}"))
    return found


def exit_code(findings: list[Finding]) -> int:
    """1 when any check failed, else 0 (warnings do not fail the command)."""
    return 1 if any(f.verdict is Verdict.FAIL for f in findings) else 0


def lines(findings: list[Finding]) -> list[str]:
    """One line per check (verdict, name, what was found), the fix under it, a tally."""
    out = []
    width = max((len(f.check) for f in findings), default=0)
    for f in findings:
        label = "FAIL" if f.verdict is Verdict.FAIL else f.verdict.value
        out.append(f"{label:<4}  {f.check:<{width}}  {f.summary}")
        if f.fix and f.verdict is not Verdict.OK:
            out.append(f"{'':<4}  {'':<{width}}  fix: {f.fix}")
    tally = {v: sum(1 for f in findings if f.verdict is v) for v in Verdict}
    out.append(f"{len(findings)} checks: {tally[Verdict.OK]} ok, {tally[Verdict.WARN]} warn,"
               f" {tally[Verdict.FAIL]} fail")
    return out
