"""The systemd units in systemd/: valid for systemd, and what they run speaks sd_notify.

`Type=notify` is emulated as systemd does it: a datagram socket in
``NOTIFY_SOCKET``, and the unit's command is ready when ``READY=1`` arrives.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from appliance.dbserver import binaries
from appliance.dbserver.private import PrivateLayout, initialise, socket_live
from tests.support.components import REPO, missing

UNITS = sorted((REPO / "systemd").glob("*.service"))


def test_both_units_are_shipped() -> None:
    assert [u.name for u in UNITS] == ["tidings-mariadb.service", "tidings.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies_cleanly(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze not found (apt-get install systemd)")
    # verify checks that ExecStart's program exists: point it at one that does.
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/usr/local/bin/tidings", "/bin/true"))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                          check=False, timeout=60)
    # It exits 0 even for keys it ignores: any word on stderr is a finding.
    assert (done.returncode, done.stderr.strip()) == (0, "")


def _exec_start(unit: str, data_dir: Path) -> list[str]:
    """The unit's ExecStart, with this checkout's `tidings` and `data_dir`."""
    [line] = [x for x in (REPO / "systemd" / unit).read_text().splitlines()
              if x.startswith("ExecStart=")]
    words = line.removeprefix("ExecStart=").split()
    assert words[0] == "/usr/local/bin/tidings"
    assert words[1:3] == ["--data-dir", "/var/lib/tidings"]
    return [sys.executable, "-m", "appliance", "--data-dir", str(data_dir), *words[3:]]


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


def test_serve_says_ready_once_listening_and_stopping_on_sigterm(tmp_path: Path) -> None:
    with notify_socket(tmp_path) as (sock, path):
        proc = subprocess.Popen([*_exec_start("tidings.service", tmp_path / "data"),
                                 "--port", "0"], env={**os.environ, "NOTIFY_SOCKET": path},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            seen = _until(sock, "READY=1")
            assert any(x.startswith("STATUS=listening on 127.0.0.1:") for x in seen)
            proc.send_signal(signal.SIGTERM)
            _until(sock, "STOPPING=1")
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


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
