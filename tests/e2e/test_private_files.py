"""Issue 12, finding 8: no secret in the log, no world-readable data.

A server started with ``--debug`` logs no `Authorization` header, app secret,
operator key or access token (the h2/hpack loggers log every header at
DEBUG); the data directory and the SQLite files are created 0700/0600 even
when the server is started by hand under umask 022.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.client import Client
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


def _cli(data: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(data), *args],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def test_debug_logs_carry_no_secret(data_dir: Path) -> None:
    tokens, _ = provision(data_dir, ["alice"])
    secret = _cli(data_dir, "app", "secret")
    key = _cli(data_dir, "operator", "key")
    server = ServerProcess(data_dir, env={"TIDINGS_DEBUG": "1"})
    server.command = [sys.executable, "-m", "appliance", "--debug"]
    server.start()
    try:
        base = f"http://{server.host}:{server.port}"
        for version in ("--http1.1", "--http2-prior-knowledge"):
            for credential, path in ((secret, "/v1/users"), (key, "/v1/apps"),
                                     ("tds_not-a-real-secret", "/v1/users")):
                done = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                       version, "-H", f"Authorization: Bearer {credential}",
                                       base + path], capture_output=True, text=True,
                                      timeout=30)
                assert done.stdout in ("200", "401"), done

        async def hello() -> None:
            client = await Client.connect(server.host, server.port, tokens["alice"], "d")
            await client.close()

        asyncio.run(hello())
    finally:
        server.stop()
    out = server.output
    assert "DEBUG" in out, "the server did not log at DEBUG: the test proves nothing"
    for leaked in (secret, key, tokens["alice"], "tds_not-a-real-secret"):
        assert leaked not in out, f"{leaked[:6]}... is in the log"
    assert "authorization" not in out.lower(), [
        line for line in out.splitlines() if "authorization" in line.lower()][:3]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_is_private_whatever_the_umask(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"  # not created yet: the server creates it
    old = os.umask(0o022)
    try:
        server = ServerProcess(data)
        server.start()
    finally:
        os.umask(old)
    try:
        secret = _cli(data, "app", "secret")
        assert secret.startswith("tds_")
    finally:
        assert server.stop() == 0
    assert _mode(data) == 0o700, oct(_mode(data))
    # The status file (issue 14) alone may be read by the service's group (an
    # operator without sudo on an installed host): it holds no secret.  Never world.
    status = data / "run" / "status.json"
    assert (_mode(status.parent), _mode(status)) == (0o750, 0o640)
    files = [p for p in data.rglob("*") if p.is_file() and p != status]
    assert any(p.suffix == ".sqlite3" for p in files), files
    for path in files:
        assert _mode(path) & 0o077 == 0, (path, oct(_mode(path)))
    for path in (p for p in data.rglob("*") if p.is_dir() and p != status.parent):
        assert _mode(path) & 0o077 == 0, (path, oct(_mode(path)))
