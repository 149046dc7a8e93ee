"""Start a program with listening sockets handed over as systemd does (sd_listen_fds(3)).

The test holds the sockets, as systemd's socket unit would: they outlive every
server started on them.  A tiny wrapper puts them at descriptors 3, 4...,
sets ``LISTEN_FDS``, ``LISTEN_FDNAMES`` and ``LISTEN_PID`` (its own pid, which
the program keeps: the wrapper execs it) and execs the program.
"""

from __future__ import annotations

import socket
import sys

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
