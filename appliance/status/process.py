"""Is the pid a status file names still that server?  (Linux /proc.)

A pid alone is not enough: after a crash the kernel may give it to another
process.  The start time in clock ticks since boot (proc(5), /proc/<pid>/stat
field 22) is recorded with it, and both must match.
"""

from __future__ import annotations

import os


def _stat_fields(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat from field 3 (state) on; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read(4096)
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or
    # parentheses itself: fields are counted from the last ')'.
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields if len(fields) > 19 else None


def start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot); None when there is no such process."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields is not None else None  # field 22
    except ValueError:
        return None


def own_start_ticks() -> int:
    """This process's start time (0 when /proc cannot tell)."""
    return start_ticks(os.getpid()) or 0


def alive(pid: int, started: int) -> bool:
    """True while the process `pid` that started at `started` ticks still runs.

    A zombie (exited, not yet reaped) counts as gone.  `started` 0 (unknown)
    matches any start time.
    """
    fields = _stat_fields(pid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return False
    return not started or fields[19] == str(started).encode()
