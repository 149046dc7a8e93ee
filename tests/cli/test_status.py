"""`tidings status` as an operator runs it: text, --json, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.cli import main
from tests.support.components import missing
from tests.support.server import ServerProcess


def status(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The global option after the command, as operators type it.
    return subprocess.run([sys.executable, "-m", "appliance", "status", "--data-dir",
                           str(data_dir), *args], capture_output=True, text=True, check=False,
                          timeout=60)


def test_not_running_exits_3(data_dir: Path) -> None:
    done = status(data_dir)
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines()[0] == "tidings: not running"
    doc = json.loads(status(data_dir, "--json").stdout)
    assert (doc["verdict"], doc["exit_code"], doc["report"]) == ("not running", 3, None)


@pytest.mark.slow
def test_running_server_is_described(server: ServerProcess) -> None:
    done = status(server.data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert server.proc is not None
    assert lines[0].startswith(f"tidings 0.1.0: running (pid {server.proc.pid}, up ")
    text = "\n".join(lines)
    for expected in (f"health       https://127.0.0.1:{server.port}/v1/health: 200 ok in",
                     f"listeners    127.0.0.1:{server.port} (main)",
                     "connections  0 open",
                     "queue        0 messages waiting for commit",
                     f"store        SQLite {server.data_dir / 'tidings.sqlite3'}",
                     "certificate  self-signed, expires ",
                     "days left); renewal none"):
        assert expected in text
    doc = json.loads(status(server.data_dir, "--json").stdout)
    assert doc["verdict"] == "running"
    assert doc["report"]["pid"] == server.proc.pid
    assert doc["report"]["certificate"]["serving"] == "self-signed"
    assert doc["health"]["ok"] is True


def test_a_status_file_this_user_cannot_read_is_unknown(data_dir: Path) -> None:
    if os.geteuid() != 0:
        missing("acting as another user needs root")
    run = data_dir / "run"
    run.mkdir(mode=0o700)
    (run / "status.json").write_text("{}")
    data_dir.chmod(0o700)
    runner = CliRunner()
    os.seteuid(65534)  # nobody: as an operator without sudo
    try:
        result = runner.invoke(main, ["status", "--data-dir", str(data_dir)])
    finally:
        os.seteuid(0)
    assert result.exit_code == 4, result.output
    assert "unknown" in result.stdout
    assert "Permission denied (run as root or as the service user)" in result.stdout


def test_a_bad_configuration_is_unknown_not_not_running(tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text("[server]\nport = 'eighty'\n")
    done = status(tmp_path, "--config", str(config))
    assert done.returncode == 4  # 3 would tell a script "not running"
    assert "server.port" in done.stderr
