"""What a check looks at (`Subject`) and what it says (`Finding`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from appliance.config import ApplianceConfig
from appliance.status.report import StatusReport


class Verdict(StrEnum):
    """ok: nothing to do; warn: works, but look at it; fail: fix it."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's outcome: `summary` says what was found (with the figures), `fix` what
    to do about it (empty when nothing)."""

    check: str
    verdict: Verdict
    summary: str
    fix: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {"check": self.check, "verdict": self.verdict.value, "summary": self.summary,
                "fix": self.fix or None, "figures": self.figures}


@dataclass(frozen=True, slots=True)
class Subject:
    """What the checks look at.

    `report` is the running server's status report, only when that server
    runs (its pid alive); `installed` is true on a host set up by the
    installer (the service user exists and the data directory is the
    installed one), where ownership by the service user is expected.
    """

    config: ApplianceConfig
    now_ms: int
    report: StatusReport | None = None
    installed: bool = False
    config_file: Path | None = None

    @property
    def data_dir(self) -> Path:
        """The data directory the checks are about."""
        return self.config.storage.data_dir


#: A check: looks at the subject, says what it found.  It may raise an
#: `ApplianceError` or an `OSError`; the registry turns that into a failure.
Check = Callable[[Subject], Finding]
