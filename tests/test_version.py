"""appliance.__version__: the checkout's, or the one a release build bundles."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import appliance
from appliance import RELEASE_VERSION_FILE, _release_version


def test_a_checkout_reports_its_own_version() -> None:
    assert appliance.__version__ == "0.1.0"
    assert _release_version() is None


@pytest.mark.parametrize(("content", "expected"), [
    ("1.2.3\n", "1.2.3"), ("10.0.200", "10.0.200"),
    ("1.2", None), ("1.2.3-evil", None), ("", None), ("1" * 40, None),
])
def test_a_release_build_reports_the_bundled_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str,
        expected: str | None) -> None:
    bundled = tmp_path / RELEASE_VERSION_FILE
    bundled.parent.mkdir(parents=True)
    bundled.write_text(content)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert _release_version() == expected


def test_a_development_build_has_no_bundled_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert _release_version() is None
