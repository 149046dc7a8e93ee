"""Real components the tests need (MariaDB, the frozen build...): fail in CI, skip elsewhere."""

from __future__ import annotations

import os
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
