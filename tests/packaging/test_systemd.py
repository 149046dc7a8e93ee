"""The systemd units in systemd/: valid for systemd, and what they run speaks sd_notify.

`Type=notify` is emulated as systemd does it: a datagram socket in
``NOTIFY_SOCKET``, and the unit's command is ready when ``READY=1`` arrives.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from appliance.dbserver import binaries
from appliance.dbserver.private import PrivateLayout, initialise, socket_live
from appliance.system import layout
from tests.support.components import REPO, missing

UNITS = sorted((REPO / "systemd").glob("tidings*"))
#: `systemd-analyze security` exposure each service must stay at or below (issue 14).
MAX_EXPOSURE = 2.5


def _analyze() -> str:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze not found (apt-get install systemd)")
    return analyze


def test_the_units_are_shipped() -> None:
    assert [u.name for u in UNITS] == ["tidings-mariadb.service", "tidings.service",
                                       "tidings.socket"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies_cleanly(unit: Path, tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at one that does.
    # The socket unit is verified with its service beside it (Service=).
    for each in UNITS:
        (tmp_path / each.name).write_text(
            each.read_text().replace("/usr/local/bin/tidings", "/bin/true"))
    done = subprocess.run([_analyze(), "verify", str(tmp_path / unit.name)],
                          capture_output=True, text=True, check=False, timeout=60, cwd=tmp_path)
    # It exits 0 even for keys it ignores: any word on stderr is a finding.
    assert (done.returncode, done.stderr.strip()) == (0, "")


@pytest.mark.parametrize("unit", [u for u in UNITS if u.suffix == ".service"],
                         ids=lambda u: u.name)
def test_hardening_keeps_exposure_at_most_2_5(unit: Path) -> None:
    done = subprocess.run([_analyze(), "security", "--offline=yes", str(unit)],
                          capture_output=True, text=True, check=False, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout[-2000:] + done.stderr
    exposure = float(found[1])
    print(f"\n{unit.name}: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, done.stdout


def _exec_start(unit: str, data_dir: Path, config: Path | None = None) -> list[str]:
    """The unit's ExecStart, with this checkout's `tidings`, `data_dir` and `config`."""
    [line] = [x for x in (REPO / "systemd" / unit).read_text().splitlines()
              if x.startswith("ExecStart=")]
    words = line.removeprefix("ExecStart=").split()
    assert words[0] == str(layout.BIN)
    args = words[1:]
    if "--config" in args:
        at = args.index("--config")
        assert args[at + 1] == str(layout.CONFIG_FILE)
        args[at + 1] = str(config)
    at = args.index("--data-dir")
    assert args[at + 1] == str(layout.DATA_DIR)
    args[at + 1] = str(data_dir)
    return [sys.executable, "-m", "appliance", *args]


def test_the_server_unit_runs_the_installed_configuration() -> None:
    command = _exec_start("tidings.service", Path("D"), Path("C"))
    assert command[3:] == ["--config", "C", "--data-dir", "D", "serve"]


@contextmanager
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(120)
    try:
        yield sock, path
    finally:
        sock.close()


def _until(sock: socket.socket, key: str) -> list[str]:
    """Datagrams up to and including one with `key` (each blocks until one arrives)."""
    seen: list[str] = []
    while True:
        lines = sock.recv(4096).decode().split("\n")
        seen.extend(lines)
        if key in lines:
            return seen


def test_serve_says_ready_reloading_and_stopping(tmp_path: Path) -> None:
    """READY=1 once listening; SIGHUP: RELOADING=1 with the time, then READY=1 again;
    SIGTERM: STOPPING=1; WATCHDOG=1 in between."""
    config = tmp_path / "tidings.toml"
    config.write_text("[server]\nport = 0\n")
    with notify_socket(tmp_path) as (sock, path):
        proc = subprocess.Popen(_exec_start("tidings.service", tmp_path / "data", config),
                                env={**os.environ, "NOTIFY_SOCKET": path,
                                     "WATCHDOG_USEC": "200000"},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            seen = _until(sock, "READY=1")
            assert any(x.startswith("STATUS=listening on 127.0.0.1:") for x in seen)
            assert _until(sock, "WATCHDOG=1")  # the pings begin at READY=1
            proc.send_signal(signal.SIGHUP)
            seen = _until(sock, "RELOADING=1")
            [stamp] = [x for x in seen if x.startswith("MONOTONIC_USEC=")]
            now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            assert 0 < now - int(stamp.removeprefix("MONOTONIC_USEC=")) < 60_000_000
            seen = _until(sock, "READY=1")
            assert [x for x in seen if x.startswith("STATUS=")][-1].startswith(
                "STATUS=listening on 127.0.0.1:")
            # A configuration broken on disk: the reload ends all the same, says so,
            # and the server keeps its settings.
            config.write_text("[server\n")
            proc.send_signal(signal.SIGHUP)
            _until(sock, "RELOADING=1")
            seen = _until(sock, "READY=1")
            [status] = [x for x in seen if x.startswith("STATUS=")][-1:]
            assert "reload failed (configuration), previous settings kept" in status
            proc.send_signal(signal.SIGTERM)
            _until(sock, "STOPPING=1")
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            out = proc.communicate()[0]
    assert "configuration not reloaded, keeping the previous edge settings" in out


def test_private_server_unit_command_becomes_mariadbd_and_says_ready(tmp_path: Path) -> None:
    if not binaries.server_installed():
        missing("MariaDB is not installed (apt-get install mariadb-server)")
    data = tmp_path / "data"
    layout = PrivateLayout(data)
    initialise(layout)
    with notify_socket(tmp_path) as (sock, path):
        proc = subprocess.Popen(_exec_start("tidings-mariadb.service", data),
                                env={**os.environ, "NOTIFY_SOCKET": path},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            _until(sock, "READY=1")
            assert socket_live(layout.socket)
            assert int(layout.pid_file.read_text()) == proc.pid  # exec'd: no wrapper left
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(120) == 0
            assert not socket_live(layout.socket)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def test_run_private_without_a_bootstrap_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run(_exec_start("tidings-mariadb.service", tmp_path), capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 1
    assert "run 'tidings db bootstrap --private' first" in done.stderr
