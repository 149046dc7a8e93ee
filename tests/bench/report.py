"""Figures of a scenario: one row per figure, the median of the runs, then each run."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One figure a scenario reports.

    `ok` compares the median with the target of issue #2, for display only:
    the benchmarks never assert on timing.
    """

    key: str
    label: str
    fmt: str = "{:,.0f}"
    target: str = ""
    ok: Callable[[float], bool] | None = None


#: Key set in a run's figures when its timing was disturbed; the table marks the run with *.
DISTURBED = "_disturbed"
#: The figures of a run that failed: its column shows "-" and is marked with !.
FAILED = {"_failed": 1.0}


def at_least(limit: float) -> Callable[[float], bool]:
    return lambda value: value >= limit


def at_most(limit: float) -> Callable[[float], bool]:
    return lambda value: value <= limit


def table(title: str, rows: list[Row], runs: list[dict[str, float]]) -> str:
    """The scenario's table as text."""
    header = ["figure", "median",
              *(f"run {i + 1}{'*' if r.get(DISTURBED) else ''}{'!' if r.get('_failed') else ''}"
                for i, r in enumerate(runs)),
              "target", ""]
    body = []
    for row in rows:
        values = [r.get(row.key) for r in runs]
        present = [v for v in values if v is not None]
        if not present:
            continue
        median = statistics.median(present)
        verdict = ""
        if row.ok is not None:
            verdict = "ok" if row.ok(median) else "MISS"
        body.append([row.label, row.fmt.format(median),
                     *("-" if v is None else row.fmt.format(v) for v in values),
                     row.target, verdict])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        cells = [line[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(line[1:-2], widths[1:-2], strict=True)]
        cells += [line[-2].ljust(widths[-2]), line[-1]]
        return "  ".join(cells).rstrip()

    rule = "-" * len(fmt(header))
    notes = []
    if any(r.get(DISTURBED) for r in runs):
        notes.append("* timing disturbed by other load or hypervisor steal (see the end)")
    if any(r.get("_failed") for r in runs):
        notes.append("! the run failed (error above)")
    return "\n".join([title, rule, fmt(header), rule, *map(fmt, body), rule, *notes])
