"""How a worker is started: the command from the sources, and what it inherits."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from appliance.media.images.process import worker_command, worker_environment
from appliance.media.images.protocol import WORKER_ARG

REPO = Path(__file__).resolve().parents[3]


def test_from_the_sources_the_worker_runs_this_checkout() -> None:
    command, cwd = worker_command()
    assert command == [sys.executable, "-m", "appliance.media.images.worker"]
    assert cwd == str(REPO)  # the `appliance` this test imports, whatever the caller's cwd


def test_frozen_the_executable_runs_itself_as_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert worker_command() == ([sys.executable, WORKER_ARG], None)


def test_the_environment_is_an_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"TIDINGS_DATABASE_PASSWORD": "hunter2", "AWS_SECRET_ACCESS_KEY": "x",
                        "LC_ALL": "C.UTF-8", "_PYI_APPLICATION_HOME_DIR": "/tmp/_MEIabc",
                        "TIDINGS_IMAGE_TEST_HOOKS": "1", "PATHOLOGICAL": "y"}.items():
        monkeypatch.setenv(name, value)
    env = worker_environment()
    assert "TIDINGS_DATABASE_PASSWORD" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert "PATHOLOGICAL" not in env  # "PATH" is a name, not a prefix
    assert env["LC_ALL"] == "C.UTF-8"
    assert env["_PYI_APPLICATION_HOME_DIR"] == "/tmp/_MEIabc"  # the bootloader reuses it
    assert env["TIDINGS_IMAGE_TEST_HOOKS"] == "1"
