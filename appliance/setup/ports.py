"""Can the server listen where the answers say?  A `bind()` test, and who holds a busy port.

Discourse checks 80/443 with netstat and names the owner (packaging.md §2);
here the kernel answers the bind test and /proc names the holder: the
listening socket's inode from /proc/net/tcp{,6}, the process whose fd
points at it.  On a re-run the running tidings service (or systemd holding
`tidings.socket` for it) holds its own ports: that is fine, not a conflict.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from appliance.errors import AnswerError
from appliance.setup.answers import LISTEN_ADDRESS, Question
from appliance.system import layout
from appliance.system.systemd import systemd_running, unit_property

#: /proc/net/tcp's state column for LISTEN (include/net/tcp_states.h: TCP_LISTEN = 10).
_LISTEN_STATE: Final = "0A"
_PROC: Final = Path("/proc")
#: Bounds on what the holder search reads: processes, fds per process, table lines.
MAX_PROCESSES: Final = 100_000
MAX_FDS: Final = 100_000
MAX_TABLE_LINES: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Holder:
    """A process with a listening socket on the port."""

    pid: int
    name: str
    cgroup: str

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid})"

    def is_tidings(self, port: int) -> bool:
        """The tidings service itself, or systemd holding `port` in `tidings.socket` for it."""
        if layout.SERVICE_UNIT in self.cgroup.split("/"):
            return True
        if self.pid != 1 or not systemd_running():
            return False
        # systemctl show -p Listen: "[::]:443 (Stream)", one line per socket.
        listens = unit_property(layout.SOCKET_UNIT, "Listen")
        return re.search(rf"(^|[\s:\]]){port} \(Stream\)", listens) is not None


def check_listen_address(raw: str) -> str:
    """"" (every address) or an IP address literal of this machine.

    Raises:
        AnswerError: anything else.
    """
    text = raw.strip().strip("[]")
    if text in ("", "*"):
        return ""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise AnswerError(f"{raw!r} is not an IP address", question=LISTEN_ADDRESS.key,
                          fix=f"give {LISTEN_ADDRESS.flag} an address of this machine, or ''"
                              " for every address") from None
    return text


def check_bindable(question: Question, listen_address: str, port: int) -> str | None:
    """Refuse a port the server could not listen on; a note when the service holds it.

    Raises:
        AnswerError: in use by another program, privileged, or the address is not here.
    """
    try:
        _try_bind(listen_address, port)
    except OSError as exc:
        return _refusal(question, listen_address, port, exc)
    return None


def _try_bind(listen_address: str, port: int) -> None:
    if listen_address:
        family = socket.AF_INET6 if ":" in listen_address else socket.AF_INET
        targets = [(family, listen_address)]
    else:  # every address: what asyncio's create_server("") binds, IPv4 and IPv6
        targets = [(socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")]
    for family, address in targets:
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            if exc.errno == errno.EAFNOSUPPORT and not listen_address:
                continue  # no IPv6 on this machine
            raise
        with probe:
            # As the server binds (reuse_address=True): TIME_WAIT leftovers are no conflict.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind((address, port))
            probe.listen(1)


def _refusal(question: Question, listen_address: str, port: int, exc: OSError) -> str | None:
    where = f"port {port}" + (f" on {listen_address}" if listen_address else "")
    if exc.errno == errno.EADDRINUSE:
        holders = list(listening_holders(port))
        if holders and all(h.is_tidings(port) for h in holders):
            return f"{where} is held by the running tidings service"
        who = (", ".join(h.describe() for h in holders if not h.is_tidings(port))
               or "a process this user cannot see (ss -ltnp names it)")
        raise AnswerError(f"{where} is in use by {who}", question=question.key,
                          fix=f"stop it, or choose another port with {question.flag}")
    if exc.errno == errno.EACCES:
        raise AnswerError(f"{where} is privileged: this process may not bind it",
                          question=question.key,
                          fix=f"run setup as root (sudo tidings setup), or choose a port above"
                              f" 1023 with {question.flag}")
    if exc.errno == errno.EADDRNOTAVAIL:
        raise AnswerError(f"{listen_address} is not an address of this machine",
                          question=LISTEN_ADDRESS.key,
                          fix=f"give {LISTEN_ADDRESS.flag} one of this machine's addresses,"
                              " or '' for every address")
    raise AnswerError(f"cannot listen on {where}: {exc.strerror}", question=question.key,
                      fix=f"choose another port with {question.flag}")


def listening_holders(port: int) -> Iterator[Holder]:
    """The processes listening on TCP `port` that this user may look at."""
    inodes = set(_listening_inodes(port))
    if not inodes:
        return
    try:
        pids = [e.name for e in os.scandir(_PROC) if e.name.isdigit()][:MAX_PROCESSES]
    except OSError:
        return
    for pid in pids:
        if _holds(pid, inodes):
            yield Holder(int(pid), _read(_PROC / pid / "comm") or "?",
                         _cgroup(_read(_PROC / pid / "cgroup")))


def _listening_inodes(port: int) -> Iterator[str]:
    for table in ("tcp", "tcp6"):
        try:
            with (_PROC / "net" / table).open(encoding="ascii", errors="replace") as f:
                next(f, None)  # the header
                for count, line in enumerate(f):
                    if count >= MAX_TABLE_LINES:
                        break
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == _LISTEN_STATE \
                            and fields[1].rpartition(":")[2] == f"{port:04X}":
                        yield fields[9]
        except OSError:
            continue


def _holds(pid: str, inodes: set[str]) -> bool:
    try:
        fds = os.scandir(_PROC / pid / "fd")
    except OSError:  # gone, or not ours to look at
        return False
    with fds:
        for count, entry in enumerate(fds):
            if count >= MAX_FDS:
                return False
            try:
                target = os.readlink(entry.path)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    return False


def _read(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            return f.read(4096).strip()
    except OSError:
        return ""


def _cgroup(text: str) -> str:
    """The process's cgroup path (the unified hierarchy's line, else systemd's)."""
    lines = text.splitlines()
    for prefix in ("0::", "1:name=systemd:"):
        for line in lines:
            if line.startswith(prefix):
                return line[len(prefix):]
    return ""
