"""Tidings: a self-hosted real-time messaging appliance."""

from __future__ import annotations

import os
import re
import sys
from typing import Final

# A checkout's version.  It stays the first assignment and a literal:
# pyproject's dynamic version reads it without importing the package.
__version__ = "0.1.0"

#: Where a release build (packaging/tidings.spec with TIDINGS_RELEASE_VERSION)
#: keeps its version, relative to the bundle's root (``sys._MEIPASS``).
RELEASE_VERSION_FILE: Final = "appliance/RELEASE_VERSION"
_RELEASE_VERSION: Final = re.compile(r"\d{1,6}\.\d{1,6}\.\d{1,6}")


def _release_version() -> str | None:
    """The version a release build was made for; None in a checkout or a development build."""
    bundle = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or not isinstance(bundle, str):
        return None
    try:
        with open(os.path.join(bundle, RELEASE_VERSION_FILE), encoding="ascii") as handle:
            text = handle.read(32).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _RELEASE_VERSION.fullmatch(text) else None


__version__ = _release_version() or __version__
