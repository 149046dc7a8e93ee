"""The health probe: a real server is healthy; silence, refusal or a stranger is not."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from appliance.errors import LifecycleError
from appliance.upgrade.health import http_health, native_hello, probe, probe_host, wait_healthy
from tests.support.server import ServerProcess


def test_a_running_server_is_healthy(server: ServerProcess) -> None:
    assert http_health(server.host, server.port) is None
    assert native_hello(server.host, server.port) is None
    assert wait_healthy(server.host, server.port, 10) < 10


def test_nothing_listening_is_not_healthy() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = holder.getsockname()[1]
        assert "ConnectionRefusedError" in (probe("127.0.0.1", port) or "")
        started = time.monotonic()
        with pytest.raises(LifecycleError, match="not healthy within 0 s"):
            wait_healthy("127.0.0.1", port, 0.5)
        assert time.monotonic() - started < 3


def test_a_stranger_that_speaks_no_tls_is_not_healthy() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        reason = probe("127.0.0.1", listener.getsockname()[1])
        thread.join(5)
    assert reason is not None
    assert "SSL" in reason


def test_probe_host() -> None:
    assert [probe_host(h) for h in ("0.0.0.0", "::", "192.0.2.1")] == [
        "127.0.0.1", "::1", "192.0.2.1"]
