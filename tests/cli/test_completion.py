"""Shell completion: the scripts click writes, and real bash completing with one."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.components import missing

ROOT = Path(__file__).resolve().parents[2]


def tidings(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *args], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize(("shell", "marker"), [
    ("bash", "complete -o nosort -F _tidings_completion tidings"),
    ("zsh", "compdef _tidings_completion tidings"),
    ("fish", "complete --no-files --command tidings"),
])
def test_each_shell_gets_its_script(shell: str, marker: str) -> None:
    done = tidings("completion", shell)
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout
    assert "_TIDINGS_COMPLETE" in done.stdout


def test_unknown_shell_is_refused() -> None:
    done = tidings("completion", "tcsh")
    assert done.returncode == 2
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in done.stderr


def test_the_help_says_how_to_install_it() -> None:
    help_text = tidings("completion", "--help").stdout
    assert "tidings completion bash > /etc/bash_completion.d/tidings" in help_text
    assert 'eval "$(tidings completion bash)"' in help_text


def test_the_completion_protocol_completes_commands_and_options() -> None:
    done = tidings(env={"_TIDINGS_COMPLETE": "bash_complete", "COMP_WORDS": "tidings se",
                        "COMP_CWORD": "1"})
    words = [line.split(",", 1)[1] for line in done.stdout.splitlines()]
    assert sorted(words) == ["serve", "setup"]
    done = tidings(env={"_TIDINGS_COMPLETE": "bash_complete",
                        "COMP_WORDS": "tidings serve --da", "COMP_CWORD": "2"})
    assert done.stdout.splitlines() == ["plain,--data-dir", "plain,--database"]


def test_real_bash_completes_with_the_script(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if bash is None:
        missing("bash not found")
    # `tidings` on PATH, as installed: the script calls it to ask for completions.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "tidings"
    wrapper.write_text(f"#!/bin/sh\ncd {shlex.quote(str(ROOT))} &&"
                       f" exec {shlex.quote(sys.executable)} -m appliance \"$@\"\n")
    wrapper.chmod(0o755)
    script = tmp_path / "tidings.bash"
    script.write_text(tidings("completion", "bash").stdout)
    probe = (f"source {shlex.quote(str(script))}; COMP_WORDS=(tidings db st); COMP_CWORD=2;"
             " _tidings_completion tidings; printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run([bash, "-c", probe], capture_output=True, text=True, check=False,
                          timeout=60, env={**os.environ,
                                           "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["status"]
