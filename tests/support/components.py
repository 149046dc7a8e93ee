"""Real components the tests need (MariaDB, the frozen build...): fail in CI, skip elsewhere."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """Whether this run is CI's (``CI=true``), where nothing may be skipped for lack of a part."""
    return os.environ.get("CI", "").lower() in ("true", "1")


def missing(message: str) -> NoReturn:
    """A component is missing: FAILED under CI, SKIPPED on a developer's machine."""
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


REPO = Path(__file__).resolve().parents[2]


def frozen_binary() -> Path:
    """The executable under test; fails (CI) or skips (elsewhere) when it is missing.

    A plain function, not a fixture, so a missing build is reported as FAILED, not ERROR.
    """
    binary = Path(os.environ.get("TIDINGS_FROZEN_BIN") or REPO / "dist" / "tidings")
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    missing(f"frozen executable {binary} not found: run `sh packaging/build.sh` first"
            " (or set TIDINGS_FROZEN_BIN)")
