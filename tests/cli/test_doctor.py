"""`tidings doctor` as an operator runs it: one line per check, the fix, the exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def doctor(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "doctor", "--data-dir",
                           str(data_dir), *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=120)


def test_doctor_reports_and_fails_on_a_failure(data_dir: Path) -> None:
    data_dir.chmod(0o700)
    done = doctor(data_dir, "--json")
    report = json.loads(done.stdout)
    assert [c["check"] for c in report["checks"]] == [
        "certificate", "store", "durability", "disk", "fd-limit", "clock", "ports",
        "permissions", "images"]
    failing = [c for c in report["checks"] if c["verdict"] == "fail"]
    assert done.returncode == report["exit_code"] == (1 if failing else 0), failing
    permissions = next(c for c in report["checks"] if c["check"] == "permissions")
    assert (permissions["verdict"], permissions["fix"]) == ("ok", None)

    data_dir.chmod(0o777)
    done = doctor(data_dir)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert f"FAIL  permissions  {data_dir} is 0777: others may write" in lines
    assert f"                   fix: chmod 0750 {data_dir}" in lines
    assert lines[-1].startswith("9 checks: ")
    assert lines[-1].endswith(" fail")
    assert not (data_dir / "tidings.sqlite3").exists()  # looking changed nothing
