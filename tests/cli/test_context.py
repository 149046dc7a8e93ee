"""The installed configuration file is read when no --config is given (`sudo tidings status`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.cli import context, main
from tests.support.components import missing


@pytest.fixture
def installed_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An "installed" configuration naming its data directory (at a test path, not /etc)."""
    data = tmp_path / "installed-data"
    config = tmp_path / "etc" / "tidings.toml"
    config.parent.mkdir()
    config.write_text(f'[storage]\ndata_dir = "{data}"\n')
    monkeypatch.setattr(context, "DEFAULT_CONFIG", config)
    return config


def test_the_default_file_is_read(installed_config: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["user", "add", "alice"]).exit_code == 0
    assert (tmp_path / "installed-data" / "tidings.sqlite3").is_file()
    assert runner.invoke(main, ["user", "list"]).stdout == "alice\n"
    # --config (or TIDINGS_CONFIG) names another file: the default one is not read.
    other = tmp_path / "other.toml"
    other.write_text(f'[storage]\ndata_dir = "{tmp_path / "other-data"}"\n')
    assert runner.invoke(main, ["user", "list", "--config", str(other)]).stdout == ""
    assert runner.invoke(main, ["user", "list"], env={"TIDINGS_CONFIG": str(other)}
                         ).stdout == ""
    assert runner.invoke(main, ["--config", "/dev/null", "--data-dir", str(tmp_path / "x"),
                                "user", "list"]).stdout == ""
    help_text = runner.invoke(main, ["--help"]).stdout
    assert "without --config, /etc/tidings/tidings.toml is read" in " ".join(help_text.split())


def test_an_unreadable_default_file_is_said_not_silently_skipped(installed_config: Path,
                                                                 tmp_path: Path) -> None:
    if os.geteuid() != 0:
        missing("acting as another user needs root")
    installed_config.chmod(0o600)
    installed_config.parent.chmod(0o755)
    runner = CliRunner()
    os.seteuid(65534)
    try:
        result = runner.invoke(main, ["status"], env={"HOME": str(tmp_path / "home")})
    finally:
        os.seteuid(0)
    assert (f"tidings: note: {installed_config} is not readable by this user; going on"
            " without it (run with sudo, or pass --config)") in result.stderr
