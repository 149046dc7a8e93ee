"""The `lifecycle` scenario (issue 14): install, first message, upgrade and rollback times.

One run is the whole-life test (tests/e2e/test_appliance_life.py) in a booted
Debian 12 container: ``curl | sh`` of release N from a server on 127.0.0.1,
``tidings setup`` from an answers file, alice -> bob; ``tidings upgrade`` to
N+1 while a client connects in a loop (GET /v1/health, a new connection each
time); ``tidings upgrade`` to a broken N+1' that is rolled back.  The figures
are the lines that test prints, so the benchmark and the test measure the
same thing.  Downloads are from the host's loopback (the issue's figure
excludes downloads); the releases come from the build cache
(tests/support/releases.py).

- install -> first message: from the start of ``curl | sh`` to bob holding
  alice's first message (install, setup incl. the service's start, users and
  tokens over REST, the exchange);
- upgrade downtime: SIGTERM of N to READY=1 of N+1, from systemd's own
  timestamps (ExecMainExitTimestampMonotonic, ActiveEnterTimestampMonotonic),
  as `tidings upgrade` reports it;
- attempts refused during the upgrade: connections refused while the prober
  ran (tidings.socket keeps the listening socket across the restart);
- rollback: the time `tidings upgrade` reports for restoring N+1 after N+1'
  failed its start.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import ClassVar

from tests.bench.harness import ROOT, BenchError
from tests.bench.report import Row
from tests.bench.scenarios import Settings

_FIGURES = {
    "first_message": re.compile(r"curl \| sh -> first message delivered: ([\d.]+) s"),
    "downtime": re.compile(r"downtime ([\d.]+) s \(SIGTERM"),
    "attempts": re.compile(r"connection attempts (\d+), refused"),
    "refused": re.compile(r"connection attempts \d+, refused (\d+)"),
    "rollback": re.compile(r"ROLLED BACK to \S+ in ([\d.]+) s"),
}


class Lifecycle:
    name = "lifecycle"
    rows: ClassVar[list[Row]] = [
        Row("first_message", "curl | sh -> first message delivered, s", "{:.1f}", "< 60",
            lambda v: v < 60),
        Row("downtime", "upgrade downtime (SIGTERM of N -> READY=1 of N+1), s", "{:.2f}",
            "< 2", lambda v: v < 2),
        Row("attempts", "connection attempts during the upgrade"),
        Row("refused", "of which refused", "{:.0f}", "0", lambda v: v == 0),
        Row("rollback", "rollback (broken N+1' -> N+1 running), s", "{:.2f}"),
    ]

    def title(self, s: Settings) -> str:
        return ("lifecycle: the whole-life test in a booted Debian 12 container"
                " (SQLite, self-signed, releases served on 127.0.0.1)")

    def users_needed(self, quick: bool) -> int:
        return 0

    def run(self, s: Settings) -> dict[str, float]:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
             "tests/e2e/test_appliance_life.py"], cwd=ROOT, capture_output=True, text=True,
            timeout=1800, check=False)
        if done.returncode != 0:
            raise BenchError(f"the whole-life test failed:\n{done.stdout[-3000:]}")
        figures: dict[str, float] = {}
        for key, pattern in _FIGURES.items():
            match = pattern.search(done.stdout)
            if match is None:
                raise BenchError(f"no {key} figure in the test's output:\n{done.stdout[-2000:]}")
            figures[key] = float(match.group(1))
        return figures
