"""systemctl, called from the operator's shell (never from inside the service).

packaging.md §3.2 item 9: a restart is asked of systemd by the admin's
process; the service never restarts itself from its own cgroup.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from appliance.errors import LifecycleError
from appliance.system.host import host_env

#: How long a systemctl call may take (a start waits for READY=1).
SYSTEMCTL_TIMEOUT_S = 300.0


def systemd_running() -> bool:
    """True when systemd is PID 1 here (sd_booted(3): /run/systemd/system exists)."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def systemctl(*args: str, check: bool = True,
              timeout_s: float = SYSTEMCTL_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run ``systemctl args...``; a failure (with `check`) is a LifecycleError naming it."""
    try:
        done = subprocess.run(["systemctl", *args], capture_output=True, text=True,
                              env=host_env(SYSTEMD_PAGER="", SYSTEMD_COLORS="0"),
                              timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise LifecycleError("systemctl not found", step=f"systemctl {' '.join(args)}",
                             fix="this host does not run systemd") from None
    except subprocess.TimeoutExpired:
        raise LifecycleError(f"no answer within {timeout_s:.0f} s",
                             step=f"systemctl {' '.join(args)}") from None
    if check and done.returncode != 0:
        raise LifecycleError((done.stderr or done.stdout).strip() or f"exit {done.returncode}",
                             step=f"systemctl {' '.join(args)}",
                             fix="see journalctl -u tidings")
    return done


def unit_property(unit: str, name: str) -> str:
    """One property of a unit (``systemctl show -p``), "" when unknown."""
    done = systemctl("show", "-p", name, "--value", unit, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""
