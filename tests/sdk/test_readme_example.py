"""The README's SDK example runs as printed (against a real server)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sdk.conftest import World

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[2] / "README.md"


def test_two_users_example(world: World, tmp_path: Path) -> None:
    section = README.read_text().split("## The Python SDK", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "no python example in the README's SDK section"
    script = tmp_path / "two_users.py"
    # The README talks to the default port; this server got one of its own.
    script.write_text(code[1].replace("7447", str(world.server.port)))
    result = subprocess.run([sys.executable, str(script), world.tokens["alice"],
                             world.tokens["bob"]], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(lines) == sorted([
        "alice sees SENT from ", "bob got 'hello bob' from alice", "alice sees DELIVERED from bob",
        "alice sees READ from bob"])
    assert lines[-1] == "alice sees READ from bob"  # marked read after bob got it
