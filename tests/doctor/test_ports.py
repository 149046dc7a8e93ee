"""The ports check with real sockets: free, held by another program, held by our own running
server, an address that is not this machine's, a privileged port for an unprivileged user."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.doctor.model import Subject, Verdict
from appliance.doctor.ports import check_ports
from appliance.doctor.registry import examine
from appliance.engine.clock import SystemClock
from tests.support.components import missing
from tests.support.server import ServerProcess


def subject(data_dir: Path, **server: object) -> Subject:
    config = load_config(None, {"storage.data_dir": data_dir,
                                **{f"server.{k}": v for k, v in server.items()}})
    return examine(config, SystemClock().wall_ms())


def test_a_free_port(data_dir: Path) -> None:
    # Ours, bound but not listening, with SO_REUSEADDR: a listener may bind it (as the
    # server would), and nothing else can take it meanwhile.
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        found = check_ports(subject(data_dir, port=port))
    assert (found.verdict, found.summary) == (Verdict.OK, f"127.0.0.1:{port} (server.port) free")
    found = check_ports(subject(data_dir, port=0))
    assert found.summary == "127.0.0.1:0 (server.port) any free port (0)"


def test_a_port_another_program_listens_on_fails(data_dir: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        found = check_ports(subject(data_dir, port=port))
    assert found.verdict is Verdict.FAIL
    assert found.summary.startswith(f"127.0.0.1:{port} (server.port) in use by ")
    if os.geteuid() == 0:  # ss names the holder to root
        assert f"(pid {os.getpid()})" in found.summary
    assert "choose another port" in found.fix


@pytest.mark.slow
def test_ports_held_by_our_own_running_server_are_fine(data_dir: Path) -> None:
    server = ServerProcess(data_dir, "--redirect-port", "0")
    server.start()
    try:
        redirect = int(server.output.split("redirecting http on port ")[1].split()[0])
        found = check_ports(subject(data_dir, port=server.port, redirect_port=redirect))
    finally:
        server.stop()
    assert server.proc is not None
    assert found.verdict is Verdict.OK, found
    held = f"held by the running tidings server (pid {server.proc.pid})"
    assert found.summary == (f"127.0.0.1:{server.port} (server.port) {held};"
                             f" 127.0.0.1:{redirect} (server.redirect_port) {held}")


def test_an_address_that_is_not_this_machines(data_dir: Path) -> None:
    found = check_ports(subject(data_dir, host="192.0.2.1", port=7447))
    assert found.verdict is Verdict.FAIL
    assert "192.0.2.1 is not an address of this machine" in found.summary


def test_a_privileged_port_for_an_unprivileged_user(data_dir: Path) -> None:
    if os.geteuid() != 0:
        missing("acting as another user needs root")
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        every_user_may_bind_80 = int(f.read()) <= 80
    target = subject(data_dir, port=80)
    os.seteuid(65534)
    try:
        found = check_ports(target)
    finally:
        os.seteuid(0)
    if every_user_may_bind_80:  # this host's sysctl: then there is nothing to warn about
        assert "below 1024" not in found.summary, found
        return
    assert found.verdict is Verdict.WARN
    assert "cannot be bound by this user (below 1024)" in found.summary
    assert "CAP_NET_BIND_SERVICE" in found.fix
