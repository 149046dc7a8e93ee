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
    """
    env = dict(os.environ)
    original = env.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is not None:
        env["LD_LIBRARY_PATH"] = original
    elif getattr(sys, "frozen", False):
        env.pop("LD_LIBRARY_PATH", None)
    env.update(extra)
    return env


def executable() -> str:
    """The path of the running `tidings` program: the one-file executable when
    frozen (not the extraction directory), else this interpreter."""
    return os.path.realpath(sys.executable)


def frozen() -> bool:
    """True inside the one-file executable."""
    return bool(getattr(sys, "frozen", False))
