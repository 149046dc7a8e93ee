"""The one-file executable's two processes: the server dies with the one that was started.

PyInstaller's one-file bootloader unpacks the bundle, forks, and the child
runs Python (packaging.md §4.2).  The parent forwards every catchable signal
(SIGTERM, SIGHUP...) to the child and waits; a supervisor (systemd, a
container runtime, a test) knows only the parent's pid.  SIGKILL cannot be
forwarded: before this module the child lived on as an orphan holding the
port and the store's lock, so the next start failed with "another tidings
server is using ...".  Linux's ``PR_SET_PDEATHSIG`` makes the kernel signal
the child when its parent dies.

How the child knows its parent is the bootloader (read in PyInstaller 6's
bootloader/src/pyi_main.c and pyi_utils_posix.c): the one-file parent sets
``_PYI_APPLICATION_HOME_DIR`` to the extraction directory just before it forks
and execs *its own executable* again; a run of a different executable resets
that variable.  So a frozen process whose ``_PYI_APPLICATION_HOME_DIR`` is its
own ``sys._MEIPASS`` is a one-file child, and its parent, while alive, runs
the same executable file (``/proc/<ppid>/exe`` is our ``/proc/self/exe``).

The race at start: the parent may die between the fork and the ``prctl``;
the child is then already re-parented (to init or a subreaper), the death
signal never comes, and the identity check made *after* the ``prctl`` fails:
the child exits at once.

Why SIGKILL and not SIGTERM: the bootloader forwards SIGTERM itself, so its
death without a goodbye means someone wanted an immediate stop (a supervisor's
SIGKILL, the OOM killer).  A SIGTERM would have the orphan drain for up to
``server.shutdown_timeout_s`` while the supervisor already starts the next
server, which then finds the port and the lock still taken; a stuck event
loop would not even act on it.  The store is crash-safe (SQLite's WAL,
InnoDB; tests/e2e/test_crash.py), so SIGKILL loses nothing acknowledged and
frees the port and the lock at once.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
from pathlib import Path

#: prctl(2) option, from <linux/prctl.h>.
PR_SET_PDEATHSIG = 1
#: The exit status of a child whose bootloader died before it could be bound to it.
ORPHANED_EXIT = 70  # EX_SOFTWARE-like: nothing the operator configured is wrong
#: An extraction directory younger than this may belong to a bootloader still
#: unpacking (it names the directory to its child only once done: ~1 s).
STALE_AFTER_S = 600.0
#: At most this many leftovers are looked at per start (a bound on the work).
MAX_STALE_CHECKED = 64


def onefile_child() -> bool:
    """True in the Python process of the one-file executable (never unfrozen, never onedir)."""
    home = os.environ.get("_PYI_APPLICATION_HOME_DIR")
    bundle = getattr(sys, "_MEIPASS", None)
    return (bool(getattr(sys, "frozen", False)) and home is not None and bundle is not None
            and _same_path(home, bundle))


def die_with_bootloader() -> None:
    """In the one-file executable's child, be SIGKILLed when the bootloader dies.

    Call it first thing (packaging/entry.py): every moment before it is a
    moment in which a SIGKILLed bootloader leaves an orphan.  Exits the
    process (status `ORPHANED_EXIT`) when the bootloader is already gone.
    Does nothing unfrozen, in a onedir build, or off Linux.
    """
    if not sys.platform.startswith("linux") or not onefile_child():
        return
    set_parent_death_signal(signal.SIGKILL)
    # After the prctl: a parent dying from now on sends the signal, so checking
    # the parent now closes the window between fork and prctl.
    if not parent_runs_same_executable(os.getppid()):
        os.write(2, b"tidings: the one-file executable's launcher is gone; exiting\n")
        os._exit(ORPHANED_EXIT)


def set_parent_death_signal(signum: int) -> None:
    """prctl(PR_SET_PDEATHSIG, signum): the kernel sends `signum` when the parent dies.

    Kept across execve (a server that becomes mariadbd keeps it), cleared by a
    set-user-ID exec.

    Raises:
        OSError: the kernel refused (never expected on Linux).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


def parent_runs_same_executable(ppid: int) -> bool:
    """Whether process `ppid` runs the file we run (the bootloader, not init).

    Compared by device and inode of ``/proc/<pid>/exe``, which still works when
    the file was since replaced on disk (``tidings upgrade`` renames over it).
    A parent we may not look at (``ProtectProc=invisible`` hides other users'
    processes, init among them) is not ours.
    """
    if ppid <= 1:
        return False
    try:
        mine = os.stat("/proc/self/exe")
        theirs = os.stat(f"/proc/{ppid}/exe")
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def remove_stale_extractions(now: float | None = None) -> list[Path]:
    """Delete the ``_MEI*`` directories that SIGKILLed one-file runs left beside ours.

    A SIGKILLed bootloader cannot remove what it unpacked (~90 MB each;
    packaging.md §5.3), and under systemd every watchdog or crash restart would
    leave one more in ``/var/lib/tidings/tmp``.  A directory is left alone
    while a process we can see names it in its environment (a one-file child
    runs from it), while it is younger than `STALE_AFTER_S` (a bootloader may be
    unpacking into it), or when it is not ours.  Returns what was removed.
    """
    if not onefile_child():
        return []
    ours = Path(getattr(sys, "_MEIPASS", "")).resolve()
    uid = os.geteuid()
    if now is None:
        # Our own directory was unpacked a moment ago: "now" without a clock.
        now = ours.stat().st_mtime
    candidates = []
    for path in sorted(ours.parent.glob("_MEI*"))[:MAX_STALE_CHECKED]:
        try:
            info = path.lstat()
        except OSError:
            continue
        if (path.resolve() != ours and path.is_dir() and not path.is_symlink()
                and info.st_uid == uid and now - info.st_mtime > STALE_AFTER_S):
            candidates.append(path)
    if not candidates:
        return []
    in_use = _extractions_in_use()
    removed = [path for path in candidates if str(path.resolve()) not in in_use]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def _extractions_in_use() -> set[str]:
    """``_PYI_APPLICATION_HOME_DIR`` of every process we may look at."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        for item in environ.split(b"\0"):
            if item.startswith(b"_PYI_APPLICATION_HOME_DIR="):
                found.add(os.fsdecode(item.partition(b"=")[2]))
    return found
