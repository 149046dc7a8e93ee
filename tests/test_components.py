"""A missing real component (MariaDB, the frozen build) fails under CI=true, never skips."""

from __future__ import annotations

import pytest

from tests.support.components import missing


def test_missing_component_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no MariaDB here"):
        missing("no MariaDB here")


def test_missing_component_skips_on_a_developer_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no MariaDB here"):
        missing("no MariaDB here")
