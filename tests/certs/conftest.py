"""Fixtures of the certificate tests: a real ACME CA (pebble), see tests/support/pebble.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.pebble import Pebble

MakePebble = Callable[..., Pebble]


@pytest.fixture
def make_pebble(tmp_path: Path) -> Iterator[MakePebble]:
    """``make_pebble(start=True, **Pebble's keyword arguments) -> Pebble``.

    A factory rather than a ready fixture: a test picks the CA's knobs (EAB,
    the ports its own responder listens on...), and a missing pebble binary is
    then reported as the test's failure (CI=true) or skip, not as a fixture
    error.  Every CA made is closed after the test, and both of its processes
    are asserted gone.
    """
    made: list[Pebble] = []

    def make(*, start: bool = True, **kwargs: Any) -> Pebble:
        pebble = Pebble(tmp_path / f"pebble-{len(made)}", **kwargs)
        made.append(pebble)
        return pebble.start() if start else pebble

    yield make
    for pebble in made:
        pebble.close()
