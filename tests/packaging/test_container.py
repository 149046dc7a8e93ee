"""The container harness itself: a real systemd boots, runs units, and halts."""

from __future__ import annotations

from pathlib import Path

from tests.support.container import booted


def test_container_boots_systemd_and_runs_a_notify_unit(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("payload\n")
    with booted("smoke", tmp_path) as box:
        assert box.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
        assert box.run(["cat", "/opt/payload/hello.txt"]).stdout == "payload\n"
        done = box.run(["systemd-run", "--wait", "-P", "-p", "Type=notify",
                        "-p", "NotifyAccess=all", "sh", "-c",
                        "systemd-notify --ready; echo notified"])
        assert "notified" in done.stdout
        for tool in ("curl", "openssl", "kill"):
            box.run(["sh", "-c", f"command -v {tool}"])
