"""Finding MariaDB's programs, and installing them with apt when allowed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from appliance.errors import DbServerError, DbServerMissingError
from appliance.system.host import host_env

PACKAGE = "mariadb-server"
# Debian puts mariadbd in /usr/sbin, which a non-root PATH often lacks.
_EXTRA_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _search_path() -> str:
    # TIDINGS_MARIADB_PATH: where to look instead (tests; unusual installs).
    override = os.environ.get("TIDINGS_MARIADB_PATH")
    if override is not None:
        return override
    return os.environ.get("PATH", "") + os.pathsep + _EXTRA_PATH


def find(name: str) -> Path | None:
    """The path of MariaDB program `name`, or None."""
    found = shutil.which(name, path=_search_path())
    return Path(found) if found else None


def mariadb_binary(name: str) -> Path:
    """The path of MariaDB program `name`.

    Raises:
        DbServerMissingError: it is not installed.
    """
    path = find(name)
    if path is None:
        raise DbServerMissingError(f"{name} is not installed (Debian package {PACKAGE});"
                                   f" install it, or let 'tidings db bootstrap --install-server'"
                                   f" do it", package=PACKAGE)
    return path


def server_installed() -> bool:
    """Whether mariadbd and mariadb-install-db are both present."""
    return find("mariadbd") is not None and find("mariadb-install-db") is not None


def install_server() -> None:
    """``apt-get install mariadb-server`` (root only).

    Raises:
        DbServerError: not root, apt-get missing, or the install failed.
    """
    if os.geteuid() != 0:
        raise DbServerError(f"installing {PACKAGE} needs root; run as root or"
                            f" 'apt-get install {PACKAGE}' first")
    apt = shutil.which("apt-get")
    if apt is None:
        raise DbServerError(f"apt-get not found; install {PACKAGE} with your package manager")
    env = host_env(DEBIAN_FRONTEND="noninteractive")
    for cmd in ([apt, "update", "-qq"],
                [apt, "install", "-y", "-qq", "--no-install-recommends", PACKAGE]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise DbServerError(f"{' '.join(cmd)} failed ({done.returncode}):"
                                f" {(done.stderr or done.stdout).strip()[-2000:]}")
    if not server_installed():
        raise DbServerError(f"{PACKAGE} installed, but mariadbd is still not found")
