"""Global options before or after the command; a second, different value is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from appliance.cli import main
from appliance.errors import NotFoundError

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_before_or_after_the_command(tmp_path: Path) -> None:
    data = str(tmp_path)
    assert invoke("user", "add", "alice", "--data-dir", data)[0] == 0
    assert invoke("--data-dir", data, "user", "add", "bob")[0] == 0
    before = invoke("--data-dir", data, "user", "list")
    after = invoke("user", "list", "--data-dir", data)
    assert before == after == (0, "alice\nbob\n", "")
    # On a group, before its command, too.
    assert invoke("user", "--data-dir", data, "list")[1] == "alice\nbob\n"
    code, out, _ = invoke("db", "status", "--data-dir", data)
    assert code == 0
    assert out.startswith(f"database: SQLite {tmp_path / 'tidings.sqlite3'}")


def test_two_different_values_are_refused(tmp_path: Path) -> None:
    code, _, err = invoke("--data-dir", str(tmp_path / "a"), "user", "list",
                          "--data-dir", str(tmp_path / "b"))
    assert code == 2
    assert (f"--data-dir given twice with different values ({tmp_path / 'a'} and"
            f" {tmp_path / 'b'}); give it once") in err
    code, _, err = invoke("--database", "sqlite", "db", "status", "--database", "private")
    assert code == 2
    assert "--database given twice with different values (sqlite and private)" in err
    assert not (tmp_path / "a").exists()


def test_the_same_value_twice_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    assert invoke("--data-dir", "d", "user", "add", "carol",
                  "--data-dir", str(tmp_path / "d"))[0] == 0
    assert invoke("user", "list", "--data-dir", "./d")[1] == "carol\n"


def test_the_command_line_overrides_the_environment(tmp_path: Path) -> None:
    elsewhere = tmp_path / "from-env"
    assert invoke("user", "add", "dave", "--data-dir", str(tmp_path),
                  env={"TIDINGS_DATA_DIR": str(elsewhere)})[0] == 0
    assert invoke("user", "list", env={"TIDINGS_DATA_DIR": str(tmp_path)})[1] == "dave\n"
    assert not elsewhere.exists()


def test_debug_after_the_command_shows_the_traceback(tmp_path: Path) -> None:
    code, _, err = invoke("user", "del", "nobody", "--data-dir", str(tmp_path))
    assert (code, err.strip()) == (4, "tidings: error: no user 'nobody'")
    result = CliRunner().invoke(main, ["user", "del", "nobody", "--data-dir", str(tmp_path),
                                       "--debug"])
    assert isinstance(result.exception, NotFoundError)  # raised, not turned into one line


def test_every_command_takes_them() -> None:
    def walk(command: click.Command, path: str) -> list[tuple[str, set[str]]]:
        found = [(path, {o for p in command.params for o in p.opts})]
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                found += walk(sub, f"{path} {name}")
        return found

    for path, opts in walk(main, "tidings"):
        assert {"--config", "--data-dir", "--database", "--debug"} <= opts, path


@pytest.mark.slow
def test_serve_with_the_data_dir_after_it(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--port", "0",
                             "--data-dir", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line
        assert f"(data: {tmp_path})" in line
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        if proc.stdout is not None:
            proc.stdout.close()
