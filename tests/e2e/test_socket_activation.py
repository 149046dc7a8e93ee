"""Socket activation: connection attempts during a restart wait instead of being refused.

The test holds the listening sockets as systemd's ``tidings.socket`` does and
starts server after server on them, while a client connects in a loop and
asks ``GET /v1/health`` each time.  Between two servers nobody accepts, but
the kernel completes handshakes into the socket's backlog: no attempt is
refused, and the next server answers each of them.
tests/packaging/test_systemd_container.py does the same under a real systemd.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.support.activation import CUT, HEALTH_REQUEST, Prober, activated, listener
from tests.support.components import frozen_binary
from tests.support.server import ServerProcess

RESTARTS = 3


def _command(kind: str) -> list[str]:
    return [str(frozen_binary())] if kind == "frozen" else [sys.executable, "-m", "appliance"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["python", "frozen"])
def test_no_connection_refused_while_the_server_restarts(tmp_path: Path, kind: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    main, redirect = listener(), listener()
    argv, fds = activated(_command(kind), [main, redirect], ["main", "redirect"])
    address = main.getsockname()[:2]
    prober = Prober(address)
    gaps: list[tuple[float, float]] = []  # [old server told to stop, new one listening]
    server = ServerProcess(data, command=argv, pass_fds=fds)
    try:
        server.start(timeout=60)
        assert f"listening on 127.0.0.1:{address[1]}" in server.output
        prober.start()
        for restart in range(RESTARTS):
            prober.await_served()
            stopped = time.monotonic()
            if restart == RESTARTS - 1:
                server.kill()  # a crash: its accepted connections die with it
            else:
                assert server.stop() == 0, server.output
            server = ServerProcess(data, command=argv, pass_fds=fds)
            server.start(timeout=60)
            gaps.append((stopped, time.monotonic()))
        prober.await_served()
    finally:
        prober.finish()
        server.stop()
        main.close()
        redirect.close()
    waited, cut = prober.waited(gaps), prober.cut()
    print(f"\nsocket activation ({kind}): {len(prober.probes)} attempts,"
          f" {prober.count('refused')} refused, {prober.count('served')} served,"
          f" {len(waited)} held in the backlog across a restart, {len(cut)} closed"
          f" unanswered by the server going away; restart downtime"
          f" {', '.join(f'{b - a:.2f}' for a, b in gaps)} s")
    assert prober.count("refused") == 0
    assert waited, "no attempt fell into a restart: the test proved nothing"
    # The client never hung (each attempt ended).  A SIGTERM cuts nothing (the
    # stopping server answers what it accepted: tests/transport/test_shutdown.py);
    # only the SIGKILL may cut the one attempt in flight (a client retries it).
    assert set(cut) <= CUT, cut
    assert len(cut) <= 1, cut


def test_redirect_socket_serves_redirects_and_the_main_one_the_api(tmp_path: Path) -> None:
    """Two sockets without names take their roles in order: main, then redirect."""
    data = tmp_path / "data"
    data.mkdir()
    main, redirect = listener(), listener()
    argv, fds = activated([sys.executable, "-m", "appliance"], [main, redirect])
    server = ServerProcess(data, command=argv, pass_fds=fds)
    try:
        server.start()
        port = main.getsockname()[1]
        assert f"redirecting http on port {redirect.getsockname()[1]}" in server.output
        with socket.create_connection(redirect.getsockname()[:2], timeout=30) as conn:
            conn.sendall(b"GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n")
            answer = conn.recv(65536)
        assert answer.startswith(b"HTTP/1.1 308")
        assert f"location: https://example.test:{port}/x".encode() in answer.lower()
        with socket.create_connection(main.getsockname()[:2], timeout=30) as conn:
            conn.sendall(HEALTH_REQUEST)
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        assert server.stop() == 0, server.output
        main.close()
        redirect.close()


def test_a_passed_udp_socket_is_a_clear_configuration_error(tmp_path: Path) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    argv, fds = activated([sys.executable, "-m", "appliance"], [udp], ["main"])
    server = ServerProcess(tmp_path / "data", command=argv, pass_fds=fds)
    try:
        with pytest.raises(RuntimeError, match="server exited before listening"):
            server.start()
        assert server.wait() == 3  # a configuration error
        assert ("tidings.socket: descriptor 3 (main) is not a listening TCP socket"
                " (AF_INET SOCK_DGRAM)") in server.output
        assert "ListenStream=" in server.output
    finally:
        udp.close()


def test_the_socket_outlives_the_server_that_used_it(tmp_path: Path) -> None:
    """The server closes its copy only: afterwards connecting still succeeds (the backlog)."""
    main = listener()
    argv, fds = activated([sys.executable, "-m", "appliance"], [main], ["main"])
    server = ServerProcess(tmp_path / "data", command=argv, pass_fds=fds)
    try:
        server.start()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0, server.output
        with socket.create_connection(main.getsockname()[:2], timeout=5):
            pass
    finally:
        main.close()
