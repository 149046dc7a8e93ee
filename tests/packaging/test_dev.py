"""`sh packaging/dev.sh serve`: the server's line is the first thing it prints.

pip's output (the mariadb connector's C build warnings, even with -q) goes to
a log shown only when pip fails.  dev.sh runs here on a copy of the
repository whose `.venv` is a hard-linked copy of this run's venv without the
project in it: its `pip install -e .` then does the real work (builds and
installs the project) without touching the venv the tests run in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_PROJECT = ("tidings-", "__editable__", "__pycache__")

pytestmark = pytest.mark.slow


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system: a copy (slower, as safe)
        shutil.copy2(src, dst)


def checkout(tmp_path: Path) -> Path:
    """A copy of the repository with a venv holding every dependency but not the project."""
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("appliance", "packaging"):
        shutil.copytree(REPO / part, repo / part, ignore=ignore)
    for part in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / part, repo / part)
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(repo / ".venv")],
                   check=True)
    ours = Path(sysconfig.get_paths()["purelib"])
    theirs = repo / ".venv" / ours.relative_to(Path(sys.prefix))
    for entry in ours.iterdir():
        if entry.name.startswith(_PROJECT) or (theirs / entry.name).exists():
            continue
        # Hard links, never symbolic ones: whatever pip removes there is removed there only.
        if entry.is_dir():
            shutil.copytree(entry, theirs / entry.name, copy_function=_link_or_copy,
                            ignore=ignore)
        else:
            _link_or_copy(str(entry), str(theirs / entry.name))
    return repo


def test_serve_prints_the_servers_line_first(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen(["sh", "packaging/dev.sh", "serve", "--port", "0", "--data-dir",
                             str(tmp_path / "data")], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TMPDIR": str(scratch)})
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("tidings 0.1.0 listening on 127.0.0.1:"), first
        assert f"(data: {tmp_path / 'data'})" in first
        assert (repo / ".venv" / "bin" / "tidings").is_file()  # pip did install the project
        assert list(scratch.iterdir()) == []  # pip's log is gone once pip succeeded
    finally:
        proc.terminate()  # dev.sh exec'd the server: this is its pid
        assert proc.wait(timeout=30) == 0
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_failing_pip_shows_its_output(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    (repo / "pyproject.toml").write_text("[project\nname = 'broken'\n")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run(["sh", "packaging/dev.sh", "serve", "--port", "0"], cwd=repo,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 1
    assert done.stdout == ""
    assert "at the end of a table declaration" in done.stderr  # pip's own words
    assert done.stderr.rstrip().endswith(
        "dev.sh: pip install -q -e . failed (its output is above)")
    assert list(scratch.iterdir()) == []
