"""Socket activation: connection attempts during a restart wait instead of being refused.

The test holds the listening sockets as systemd's ``tidings.socket`` does and
starts server after server on them, while a client connects in a loop and
asks ``GET /v1/health`` each time.  Between two servers nobody accepts, but
the kernel completes handshakes into the socket's backlog: no attempt is
refused, and the next server answers each of them.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.activation import activated, listener
from tests.support.components import frozen_binary
from tests.support.server import ServerProcess

_REQUEST = b"GET /v1/health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
RESTARTS = 3


@dataclass
class Probe:
    """One connection attempt: when it connected, when it was answered, and how."""

    connected: float
    answered: float
    outcome: str  # "served", "refused", or what went wrong


class Prober(threading.Thread):
    """Connects to `address` in a loop until `done` is set."""

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.done = threading.Event()
        self.probes: list[Probe] = []

    def run(self) -> None:
        while not self.done.is_set():
            start = time.monotonic()
            try:
                with socket.create_connection(self.address, timeout=60) as conn:
                    connected = time.monotonic()
                    conn.sendall(_REQUEST)
                    answer = b""
                    while chunk := conn.recv(65536):
                        answer += chunk
                        if len(answer) > 1 << 20:
                            break
                outcome = "served" if answer.startswith(b"HTTP/1.1 200") else repr(answer[:60])
                self.probes.append(Probe(connected, time.monotonic(), outcome))
            except ConnectionRefusedError:
                self.probes.append(Probe(start, time.monotonic(), "refused"))
            except OSError as exc:
                self.probes.append(Probe(start, time.monotonic(), repr(exc)))

    def count(self, outcome: str) -> int:
        return sum(p.outcome == outcome for p in self.probes)


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
    downtimes: list[float] = []
    server = ServerProcess(data, command=argv, pass_fds=fds)
    try:
        server.start(timeout=60)
        assert f"listening on 127.0.0.1:{address[1]}" in server.output
        prober.start()
        for restart in range(RESTARTS):
            _await_served(prober, 1)
            stopped = time.monotonic()
            if restart == RESTARTS - 1:
                server.kill()  # a crash: its accepted connections die with it
            else:
                assert server.stop() == 0, server.output
            server = ServerProcess(data, command=argv, pass_fds=fds)
            server.start(timeout=60)
            gaps.append((stopped, time.monotonic()))
            downtimes.append(time.monotonic() - stopped)
        _await_served(prober, 1)
    finally:
        prober.done.set()
        if prober.is_alive():
            prober.join(timeout=60)
        server.stop()
        main.close()
        redirect.close()
    # Connected while the old server was going or gone, answered by the next one.
    waited = [p for p in prober.probes if p.outcome == "served"
              and any(a <= p.connected <= b <= p.answered for a, b in gaps)]
    cut = [p.outcome for p in prober.probes if p.outcome not in ("served", "refused")]
    print(f"\nsocket activation ({kind}): {len(prober.probes)} attempts,"
          f" {prober.count('refused')} refused, {prober.count('served')} served,"
          f" {len(waited)} connected while no server ran, {len(cut)} closed unanswered by"
          f" the server going away; restart downtime"
          f" {', '.join(f'{d:.2f}' for d in downtimes)} s")
    assert prober.count("refused") == 0
    assert waited, "no attempt fell into a restart: the test proved nothing"
    # The client never hung (each attempt ended), and the only attempts not served
    # are those the old server had accepted when it stopped (at most the one in
    # flight per restart; a client retries them): all on the next server.
    assert set(cut) <= {"b''", repr(ConnectionResetError(104, "Connection reset by peer"))}, cut
    assert len(cut) <= RESTARTS, cut


def _await_served(prober: Prober, n: int) -> None:
    """Until `n` more attempts have been served (the client runs in its thread)."""
    target = prober.count("served") + n
    deadline = time.monotonic() + 60
    while prober.count("served") < target:
        assert time.monotonic() < deadline, "the client got no answer within 60 s"
        assert prober.is_alive()
        time.sleep(0.01)


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
            conn.sendall(_REQUEST)
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
                " (AF_INET SOCK_DGRAM") in server.output
        assert "ListenStream=" in server.output
    finally:
        udp.close()


def test_sigterm_reaches_the_server_on_a_passed_socket(tmp_path: Path) -> None:
    """The SIGTERM path used by every restart, on its own: exit 0, socket still held."""
    main = listener()
    argv, fds = activated([sys.executable, "-m", "appliance"], [main], ["main"])
    server = ServerProcess(tmp_path / "data", command=argv, pass_fds=fds)
    try:
        server.start()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0, server.output
        # The server closed its copy only: connecting still succeeds (the backlog).
        with socket.create_connection(main.getsockname()[:2], timeout=5):
            pass
    finally:
        main.close()
