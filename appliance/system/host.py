"""Running the host's own programs from the (possibly frozen) executable."""

from __future__ import annotations

import os
import sys


def host_env(**extra: str) -> dict[str, str]:
    """The environment for a program of the host (mariadbd, systemctl, apt-get...).

    Frozen, PyInstaller's bootloader points ``LD_LIBRARY_PATH`` at the
    bundle's own libssl/libz; a host program inheriting it can load those
    instead of its own and crash.  The bootloader keeps the original in
    ``LD_LIBRARY_PATH_ORIG`` (packaging.md §5.4).

    It also tells its own child where it unpacked itself through ``_PYI_*``
    variables; another one-file executable inheriting them (the new
    `tidings` during an upgrade) would take itself for that child and run
    *this* process's unpacked code, or fail on a directory it may not read.
    ``PYINSTALLER_RESET_ENVIRONMENT`` asks for an independent start.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("_PYI_")}
    env.pop("_MEIPASS2", None)
    original = env.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is not None:
        env["LD_LIBRARY_PATH"] = original
    elif getattr(sys, "frozen", False):
        env.pop("LD_LIBRARY_PATH", None)
    if getattr(sys, "frozen", False):
        env["PYINSTALLER_RESET_ENVIRONMENT"] = "1"
    env.update(extra)
    return env


def executable() -> str:
    """The path of the running `tidings` program: the one-file executable when
    frozen (not the extraction directory), else this interpreter."""
    return os.path.realpath(sys.executable)


def frozen() -> bool:
    """True inside the one-file executable."""
    return bool(getattr(sys, "frozen", False))
