"""The README's SDK example runs as printed (against a real server).

It imports the SDK as an app does, `tidings` (the wheel's name for appliance/sdk):
packaging/sdk/stage.py writes that package from this checkout, on the script's path.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sdk.conftest import World

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
STAGE_PY = REPO / "packaging" / "sdk" / "stage.py"


def test_two_users_example(world: World, tmp_path: Path) -> None:
    section = README.read_text().split("## The Python SDK", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "no python example in the README's SDK section"
    script = tmp_path / "two_users.py"
    # The README talks to the default port; this server got one of its own.
    script.write_text(code[1].replace("7447", str(world.server.port)))
    subprocess.run([sys.executable, str(STAGE_PY), str(tmp_path / "sdk")], check=True,
                   capture_output=True, timeout=60)
    result = subprocess.run([sys.executable, str(script), world.tokens["alice"],
                             world.tokens["bob"]], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(tmp_path / "sdk")})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(lines) == sorted([
        "alice sees SENT from ", "bob got 'hello bob' from alice", "alice sees DELIVERED from bob",
        "alice sees READ from bob"])
    assert lines[-1] == "alice sees READ from bob"  # marked read after bob got it
