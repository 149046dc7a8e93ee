"""`tidings client send|listen` against a real server process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


def _tidings(*args: str, env: dict[str, str]) -> list[str]:
    return [sys.executable, "-m", "appliance", *args]


def test_send_then_listen_and_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    tokens, _ = provision(data, ["alice", "bob"])
    server = ServerProcess(data)
    server.start()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"),
           "TIDINGS_SERVER": f"{server.host}:{server.port}"}
    try:
        sent = subprocess.run(
            _tidings("client", "send", "bob", "hello from the CLI", "--token", tokens["alice"],
                     env=env), env=env, capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        status, msg_id = sent.stdout.split()
        assert status == "sent"
        listen = subprocess.run(
            _tidings("client", "listen", "--count", "1", "--json", "--mark-read", env=env),
            env={**env, "TIDINGS_TOKEN": tokens["bob"]}, capture_output=True, text=True,
            timeout=60)
        assert listen.returncode == 0, listen.stderr
        got = json.loads(listen.stdout)
        assert (got["sender"], got["text"], got["id"]) == ("alice", "hello from the CLI",
                                                           int(msg_id))
        # The same store (device) again: the message was acknowledged, nothing repeats,
        # and alice's next send waits for bob to read it.
        listener = subprocess.Popen(
            _tidings("client", "listen", "--count", "1", "--mark-read", env=env),
            env={**env, "TIDINGS_TOKEN": tokens["bob"]}, stdout=subprocess.PIPE, text=True)
        read = subprocess.run(
            _tidings("client", "send", "bob", "second", "--wait", "read", "--token",
                     tokens["alice"], env=env), env=env, capture_output=True, text=True,
            timeout=60)
        out, _ = listener.communicate(timeout=60)
        assert read.returncode == 0, read.stderr
        assert read.stdout.startswith("read ")
        assert out == "alice: second\n"

        bad = subprocess.run(_tidings("client", "send", "nobody", "x", "--token",
                                      tokens["alice"], env=env),
                             env=env, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1
        assert "INVALID_DEST" in bad.stderr
        refused = subprocess.run(_tidings("client", "send", "bob", "x", "--token", "tdg_nope",
                                          env=env), env=env, capture_output=True, text=True,
                                 timeout=60)
        assert refused.returncode == 1
        assert "AUTH_FAILED" in refused.stderr
    finally:
        server.stop()
