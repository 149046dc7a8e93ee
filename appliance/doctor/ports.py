"""The configured ports: free to bind, or held by our own running server (or systemd's
socket unit, which hands them to it)."""

from __future__ import annotations

import errno
import re
import shutil
import socket
import subprocess
from typing import Final

from appliance.doctor.model import Finding, Subject, Verdict
from appliance.status.report import StatusReport
from appliance.system.host import host_env

NAME: Final = "ports"
_HOLDER = re.compile(r'users:\(\("([^"]{1,64})",pid=(\d{1,10})')


def check_ports(subject: Subject) -> Finding:
    """Fail when a configured port is held by another program or the address is not this
    machine's; warn when this user may not bind it (below 1024 without root)."""
    server = subject.config.server
    wanted = [("server.port", server.port)]
    if server.redirect_port > 0:
        wanted.append(("server.redirect_port", server.redirect_port))
    worst, said, fixes = Verdict.OK, [], []
    figures: dict[str, object] = {}
    for key, port in wanted:
        verdict, text, fix = _port(server.host, port, subject.report)
        figures[key] = {"host": server.host, "port": port, "verdict": verdict.value}
        said.append(f"{server.host}:{port} ({key}) {text}")
        if fix:
            fixes.append(fix)
        if verdict is Verdict.FAIL or (verdict is Verdict.WARN and worst is Verdict.OK):
            worst = verdict
    return Finding(NAME, worst, "; ".join(said), "; ".join(fixes), figures)


def _port(host: str, port: int, report: StatusReport | None) -> tuple[Verdict, str, str]:
    if port == 0:
        return Verdict.OK, "any free port (0)", ""
    if report is not None and any(x.port == port for x in report.listeners):
        return Verdict.OK, f"held by the running tidings server (pid {report.pid})", ""
    error = _bind(host, port)
    if error is None:
        return Verdict.OK, "free", ""
    if error == errno.EADDRINUSE:
        holder = _holder(port)
        if holder is not None and holder[1] == 1:
            return Verdict.OK, "held by systemd (socket activation: tidings.socket)", ""
        who = f"{holder[0]} (pid {holder[1]})" if holder else "another program"
        return (Verdict.FAIL, f"in use by {who}",
                f"stop {who} or choose another port in the configuration")
    if error == errno.EACCES:
        return (Verdict.WARN, "cannot be bound by this user (below 1024)",
                "run the server as the tidings.service unit (it grants"
                " CAP_NET_BIND_SERVICE) or check as root")
    if error == errno.EADDRNOTAVAIL:
        return (Verdict.FAIL, f"{host} is not an address of this machine",
                "set [server] host to one of this machine's addresses (or 0.0.0.0)")
    return Verdict.FAIL, f"cannot be bound: {errno.errorcode.get(error, error)}", ""


def _bind(host: str, port: int) -> int | None:
    """Try to bind host:port as the server would (SO_REUSEADDR); the errno, None if free."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return errno.EADDRNOTAVAIL
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return exc.errno or errno.EINVAL
    return None


def _holder(port: int) -> tuple[str, int] | None:
    """The program listening on TCP `port` (ss(8) shows it to root), if it can be told."""
    if shutil.which("ss") is None:
        return None
    try:
        done = subprocess.run(["ss", "-Htlnp", f"sport = :{port}"], capture_output=True,
                              text=True, timeout=10, check=False, env=host_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _HOLDER.search(done.stdout[:65536])
    return (match[1], int(match[2])) if match else None
