"""The machine: free disk, the file-descriptor limit, a synchronised clock."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Final

from appliance.doctor.model import Finding, Subject, Verdict
from appliance.system.host import host_env
from appliance.system.systemd import systemd_running

DISK: Final = "disk"
FD_LIMIT: Final = "fd-limit"
CLOCK: Final = "clock"

MIB: Final = 1024 * 1024
GIB: Final = 1024 * MIB
#: Free space in the data directory's file system.  The percentages only count
#: while the absolute figure is small too: 5 % of a 20 TB disk is plenty.
DISK_FAIL_BYTES, DISK_FAIL_PERCENT, DISK_FAIL_CAP = 200 * MIB, 2.0, 2 * GIB
DISK_WARN_BYTES, DISK_WARN_PERCENT, DISK_WARN_CAP = 1 * GIB, 10.0, 10 * GIB
#: Every connection is a descriptor; systemd's unit sets 1048576 (packaging.md §4.5).
FD_WARN: Final = 65536


def _existing(path: Path) -> Path:
    """`path`, or its nearest existing parent (a data directory not made yet)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_disk(subject: Subject) -> Finding:
    """Free space (as the unprivileged service sees it) and free inodes of the data
    directory's file system."""
    where = _existing(subject.data_dir)
    usage = shutil.disk_usage(where)  # free = f_bavail: without root's reserve
    st = os.statvfs(where)
    percent = 100.0 * usage.free / usage.total if usage.total else 0.0
    inodes = 100.0 * st.f_favail / st.f_files if st.f_files else 100.0
    figures = {"path": str(where), "free_bytes": usage.free, "total_bytes": usage.total,
               "free_percent": round(percent, 1), "free_inodes_percent": round(inodes, 1)}
    said = (f"{where}: {usage.free / GIB:.2f} GiB free of {usage.total / GIB:.2f} GiB"
            f" ({percent:.1f} %), {inodes:.0f} % of inodes free")
    fix = ("free space on that file system or move the data directory to a larger one"
           " (messages are refused with FAILED once writes fail)")
    if (usage.free < DISK_FAIL_BYTES or (percent < DISK_FAIL_PERCENT
                                         and usage.free < DISK_FAIL_CAP) or inodes < 1):
        return Finding(DISK, Verdict.FAIL, f"{said}: below {DISK_FAIL_BYTES // MIB} MiB"
                       f" or {DISK_FAIL_PERCENT:g} %", fix, figures)
    if (usage.free < DISK_WARN_BYTES or (percent < DISK_WARN_PERCENT
                                         and usage.free < DISK_WARN_CAP) or inodes < 10):
        return Finding(DISK, Verdict.WARN, f"{said}: below {DISK_WARN_BYTES // GIB} GiB"
                       f" or {DISK_WARN_PERCENT:g} %", fix, figures)
    return Finding(DISK, Verdict.OK, said, figures=figures)


def nofile_limits(pid: int) -> tuple[int, int] | None:
    """(soft, hard) RLIMIT_NOFILE of process `pid` from /proc/<pid>/limits (-1: unlimited)."""
    try:
        text = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Max open files"):
            soft, hard = line[len("Max open files"):].split()[:2]
            return (-1 if soft == "unlimited" else int(soft),
                    -1 if hard == "unlimited" else int(hard))
    return None


def check_fd_limit(subject: Subject) -> Finding:
    """The running server's soft RLIMIT_NOFILE (else this process's): each connection
    holds a descriptor, so the soft limit caps connections."""
    limits, whose = None, "this process (no server running)"
    if subject.report is not None:
        limits = nofile_limits(subject.report.pid)
        whose = f"the running server (pid {subject.report.pid})"
    if limits is None:
        limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = limits
    figures = {"soft": soft, "hard": hard, "process": whose}
    said = f"{whose}: file descriptors soft limit {soft}, hard {hard}"
    if 0 <= soft < FD_WARN:
        return Finding(FD_LIMIT, Verdict.WARN, f"{said}: under {FD_WARN}, so at most about"
                       f" {soft} connections", "run it under the tidings.service unit"
                       " (LimitNOFILE=1048576), or raise `ulimit -n` before `tidings serve`",
                       figures)
    return Finding(FD_LIMIT, Verdict.OK, said, figures=figures)


def check_clock(subject: Subject) -> Finding:
    """Whether the system clock is synchronised (tokens, expiry and certificates rely on
    it): timedatectl when systemd runs, else the kernel's own state (adjtimex(2))."""
    del subject  # the clock is the machine's
    kernel = kernel_clock()
    figures: dict[str, object] = {}
    if kernel is not None:
        figures.update(maxerror_us=kernel[1], sta_unsync=kernel[2])
    synced, source = _timedatectl(), "timedatectl NTPSynchronized"
    if synced is None and kernel is not None:
        synced, source = kernel[0], f"adjtimex(2): maximum error {kernel[1] / 1e6:g} s"
    figures.update(synchronised=synced, source=source)
    fix = ("enable time synchronisation: `timedatectl set-ntp true` (systemd-timesyncd)"
           " or install chrony")
    if synced is None:
        return Finding(CLOCK, Verdict.WARN, "unknown: neither timedatectl nor adjtimex(2)"
                       " could tell whether the clock is synchronised", fix, figures)
    if not synced:
        return Finding(CLOCK, Verdict.WARN, f"not synchronised ({source})", fix, figures)
    return Finding(CLOCK, Verdict.OK, f"synchronised ({source})", figures=figures)


def _timedatectl() -> bool | None:
    if not systemd_running() or shutil.which("timedatectl") is None:
        return None
    try:
        done = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                              capture_output=True, text=True, timeout=10, check=False,
                              env=host_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = done.stdout.strip()
    return {"yes": True, "no": False}.get(value) if done.returncode == 0 else None


class _Timex(ctypes.Structure):
    """struct timex (adjtimex(2)) up to the fields read; the kernel writes the whole
    structure, so `_pad` makes room for the rest (glibc's layout is 208 bytes on 64-bit)."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("_pad", ctypes.c_char * 256)]


#: adjtimex(2)'s "not synchronised" status bit, and the maximum error (µs) from which
#: the clock counts as unsynchronised (16 s: the kernel's NTP_PHASE_LIMIT).
STA_UNSYNC: Final = 0x0040
MAXERROR_LIMIT_US: Final = 16_000_000


def kernel_clock() -> tuple[bool, int, bool] | None:
    """(synchronised, maximum error in µs, STA_UNSYNC set) per the kernel; None if it
    cannot tell.

    Synchronised means a maximum error under 16 s, as systemd's own
    ``ntp_synced()`` (what ``timedatectl``'s NTPSynchronized reports) decides
    since v246: it ignores STA_UNSYNC, which some setups set to keep the kernel
    from writing the RTC.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6", use_errno=True)
    except OSError:
        return None
    timex = _Timex()  # modes 0: read only, no privilege needed
    if libc.adjtimex(ctypes.byref(timex)) < 0:
        return None
    return (timex.maxerror < MAXERROR_LIMIT_US, int(timex.maxerror),
            bool(timex.status & STA_UNSYNC))
