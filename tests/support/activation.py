"""Start a program with listening sockets handed over as systemd does (sd_listen_fds(3)).

The test holds the sockets, as systemd's socket unit would: they outlive every
server started on them.  A tiny wrapper puts them at descriptors 3, 4...,
sets ``LISTEN_FDS``, ``LISTEN_FDNAMES`` and ``LISTEN_PID`` (its own pid, which
the program keeps: the wrapper execs it) and execs the program.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from dataclasses import dataclass

_WRAPPER = r"""
import fcntl, os, sys
names, fds, command = sys.argv[1], [int(f) for f in sys.argv[2].split(",")], sys.argv[4:]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]  # out of 3, 4...'s way
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)  # inheritable
    os.close(fd)
os.environ.update(LISTEN_FDS=str(len(fds)), LISTEN_PID=str(os.getpid()))
if names:
    os.environ["LISTEN_FDNAMES"] = names
os.execvp(command[0], command)
"""


def listener(host: str = "127.0.0.1", backlog: int = 4096) -> socket.socket:
    """A listening TCP socket on a free port, as ``ListenStream=`` makes one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(backlog)
    return sock


def activated(command: list[str], sockets: list[socket.socket] | list[int],
              names: list[str] | None = None) -> tuple[list[str], tuple[int, ...]]:
    """The argv that runs `command` with `sockets` (or raw descriptors) passed, and
    the fds Popen must pass."""
    fds = tuple(s if isinstance(s, int) else s.fileno() for s in sockets)
    argv = [sys.executable, "-c", _WRAPPER, ":".join(names or []),
            ",".join(str(fd) for fd in fds), "--", *command]
    return argv, fds


#: What the prober asks: the one route without authentication.
HEALTH_REQUEST = b"GET /v1/health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
#: What an attempt the server closed unanswered looks like (taken down with it).
CUT = frozenset({"b''", repr(ConnectionResetError(104, "Connection reset by peer"))})


@dataclass
class Probe:
    """One connection attempt: when it connected, when it was answered, and how."""

    connected: float
    answered: float
    outcome: str  # "served", "refused", or what went wrong


class Prober(threading.Thread):
    """Connects to `address` in a loop, asking ``GET /v1/health``, until `done` is set."""

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
                    conn.sendall(HEALTH_REQUEST)
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

    def cut(self) -> list[str]:
        """Outcomes of attempts neither served nor refused."""
        return [p.outcome for p in self.probes if p.outcome not in ("served", "refused")]

    def waited(self, gaps: list[tuple[float, float]]) -> list[Probe]:
        """Attempts that connected within a gap [old server told to stop, new one
        ready] and were answered after it: held in the backlog, served by the next."""
        return [p for p in self.probes if p.outcome == "served"
                and any(a <= p.connected <= b <= p.answered for a, b in gaps)]

    def await_served(self, n: int = 1, timeout_s: float = 60.0) -> None:
        """Until `n` more attempts have been served (the client runs in its thread)."""
        target = self.count("served") + n
        deadline = time.monotonic() + timeout_s
        while self.count("served") < target:
            assert time.monotonic() < deadline, f"no answer within {timeout_s} s"
            assert self.is_alive()
            time.sleep(0.01)

    def finish(self) -> None:
        self.done.set()
        if self.is_alive():
            self.join(timeout=60)
