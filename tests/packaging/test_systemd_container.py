"""tidings.service and tidings.socket under a real systemd, driving the frozen executable.

A booted Debian 12 container (tests/support/container.py) gets what the
installer lays down: the one-file executable as /usr/local/bin/tidings, the
`tidings` user, /etc/tidings and /var/lib/tidings, the units in systemd/, a
configuration and a drop-in for the socket's ports.  The container shares the
host's network namespace, so the ports are picked free on the host and the
host's client reaches the server on 127.0.0.1.  systemd logs at debug level:
the journal then shows every notification it accepted and every state change.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.activation import CUT, HEALTH_REQUEST, Prober
from tests.support.components import REPO, frozen_binary
from tests.support.container import Container, booted

pytestmark = pytest.mark.slow

_INSTALL = """set -e
install -m 0755 /opt/payload/tidings /usr/local/bin/tidings
useradd --system --user-group --no-create-home --home-dir /var/lib/tidings \
    --shell /usr/sbin/nologin tidings
install -d -m 0750 -o tidings -g tidings /var/lib/tidings
install -d -m 0750 -o root -g tidings /etc/tidings
install -m 0644 /opt/payload/tidings.service /opt/payload/tidings.socket \
    /opt/payload/tidings-mariadb.service /etc/systemd/system/
mkdir -p /etc/systemd/system/tidings.socket.d /etc/systemd/system/tidings.service.d
"""
#: The periodic STATUS= line (appliance/transport/status_report.py).
_FIGURES = re.compile(r"\d+ connections, \d+ messages waiting for commit(; store failing)?")
#: A restart must be done well within this (a start waits for READY=1).
SYSTEMCTL_TIMEOUT_S = 120.0


@dataclass
class Installed:
    """A container with Tidings installed; the server's ports, as the host sees them."""

    box: Container
    port: int
    redirect: int

    def systemctl(self, *args: str) -> str:
        return self.box.run(["systemctl", *args], timeout=SYSTEMCTL_TIMEOUT_S).stdout

    def show(self, *names: str) -> dict[str, str]:
        out = self.systemctl("show", "tidings.service", *(f"--property={n}" for n in names))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> str:
        return self.box.run(["journalctl", "--no-pager", "-o", "cat", "-u", "tidings.service",
                             "-u", "tidings.socket"]).stdout

    def server_log(self) -> str:
        """What the server itself wrote (stderr, to the journal), not systemd's lines."""
        return self.box.run(["journalctl", "--no-pager", "-o", "cat", "-u", "tidings.service",
                             "-t", "tidings"]).stdout

    def server_pid(self) -> int:
        """The server: the one-file bootloader's ($MAINPID) child."""
        main = self.show("MainPID")["MainPID"]
        children = self.box.run(["cat", f"/proc/{main}/task/{main}/children"]).stdout.split()
        assert len(children) == 1, children
        return int(children[0])


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the container sees at /opt/payload: the executable and the units."""
    binary = frozen_binary()
    out = tmp_path_factory.mktemp("payload")
    shutil.copy2(binary, out / "tidings")
    for unit in (REPO / "systemd").glob("tidings*"):
        shutil.copy2(unit, out / unit.name)
    return out


def _free_port() -> int:
    """A port free on the host, whose network namespace the container shares."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _install_file(box: Container, path: str, text: str, mode: str = "0640") -> None:
    """`text` as `path`, root:tidings (the installer's owner for /etc/tidings)."""
    box.run(f"cat > {path} && chown root:tidings {path} && chmod {mode} {path}", stdin=text)


@contextmanager
def installed(payload: Path, hint: str, service_dropin: str = "", socket_unit: bool = True,
              port: int | None = None, config: str = "", prepare: str = ""
              ) -> Iterator[Installed]:
    """Boot, install, configure (`config` is appended to the [server] table), run
    `prepare` (sh); then systemd is told about the units."""
    port, redirect = port or _free_port(), _free_port()
    with booted(hint, payload) as box:
        box.run(_INSTALL)
        _install_file(box, "/etc/tidings/tidings.toml",
                      f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
                      f"redirect_port = {redirect}\n{config}")
        if prepare:
            box.run(prepare, timeout=600)
        # The drop-in format tidings.socket documents (the setup wizard writes it).
        box.run("cat > /etc/systemd/system/tidings.socket.d/ports.conf",
                stdin=f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n"
                      f"ListenStream=127.0.0.1:{redirect}\n")
        if service_dropin:
            box.run("cat > /etc/systemd/system/tidings.service.d/test.conf",
                    stdin=service_dropin)
        if not socket_unit:  # Wants=, not Requires=: a missing socket unit is no failure
            box.run(["rm", "-r", "/etc/systemd/system/tidings.socket",
                     "/etc/systemd/system/tidings.socket.d"])
        box.run(["systemctl", "daemon-reload"])
        box.run(["systemd-analyze", "log-level", "debug"])
        try:
            yield Installed(box, port, redirect)
        except BaseException:
            print(box.run(["journalctl", "--no-pager", "-n", "300", "-u", "tidings.service",
                           "-u", "tidings-mariadb.service", "-u", "tidings.socket"],
                          check=False).stdout)
            raise


def _get(port: int, request: bytes = HEALTH_REQUEST) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_start_waits_for_ready_reload_and_stop_are_told_to_systemd(payload: Path) -> None:
    with installed(payload, "notify") as tidings:
        started = time.monotonic()
        tidings.systemctl("start", "tidings.service")
        print(f"\nsystemctl start (frozen, SQLite, first start):"
              f" {time.monotonic() - started:.2f} s")
        # start returned: READY=1 came, so the server listens and the store is open.
        assert _get(tidings.port).startswith(b"HTTP/1.1 200")
        # The second ListenStream= is the redirect port.
        redirected = _get(tidings.redirect, b"GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n")
        assert redirected.startswith(b"HTTP/1.1 308")
        expected = (f"listening on 127.0.0.1:{tidings.port}, redirecting port"
                    f" {tidings.redirect} (sockets from systemd)")
        shown = tidings.show("ActiveState", "StatusText")
        assert shown["ActiveState"] == "active"
        # READY=1's line, or already the periodic report's (every 5 s).
        assert shown["StatusText"] == expected or _FIGURES.fullmatch(shown["StatusText"])
        assert re.search(r'Status: "(listening on|\d+ connections)', tidings.box.run(
            ["systemctl", "status", "--no-pager", "tidings.service"]).stdout)
        child = tidings.server_pid()
        journal = tidings.journal()
        assert f"Got notification message from PID {child} (READY=1, STATUS={expected})" \
            in journal

        tidings.systemctl("reload", "tidings.service")
        assert tidings.show("ActiveState")["ActiveState"] == "active"
        journal = tidings.journal()
        assert re.search(rf"Got notification message from PID {child} \(RELOADING=1,"
                         r" MONOTONIC_USEC=\d+, STATUS=reloading\)", journal), journal[-3000:]
        assert "Changed running -> reload" in journal
        assert "Changed reload -> running" in journal
        assert "TLS certificate reloaded" in journal
        after_reload = journal[journal.index("RELOADING=1"):]
        assert f"Got notification message from PID {child} (READY=1" in after_reload

        tidings.systemctl("stop", "tidings.service")
        assert tidings.show("ActiveState", "Result") == {"ActiveState": "inactive",
                                                         "Result": "success"}
        journal = tidings.journal()
        assert f"Got notification message from PID {child} (STOPPING=1" in journal
        # The socket unit still listens: an attempt now waits for the next server.
        assert tidings.box.run(["systemctl", "is-active", "tidings.socket"]).stdout.strip() \
            == "active"


def test_restart_refuses_no_connection_attempt(payload: Path) -> None:
    with installed(payload, "restart") as tidings:
        tidings.systemctl("start", "tidings.service")
        prober = Prober(("127.0.0.1", tidings.port))
        gaps: list[tuple[float, float]] = []
        downtimes_ms: list[float] = []
        prober.start()
        try:
            for _ in range(3):
                prober.await_served()
                began = time.monotonic()
                tidings.systemctl("restart", "tidings.service")  # returns at the new READY=1
                gaps.append((began, time.monotonic()))
                times = tidings.show("ActiveExitTimestampMonotonic",
                                     "ActiveEnterTimestampMonotonic")
                # Left "active" when the stop began (SIGTERM); entered it at READY=1.
                downtimes_ms.append((int(times["ActiveEnterTimestampMonotonic"])
                                     - int(times["ActiveExitTimestampMonotonic"])) / 1000)
            prober.await_served()
        finally:
            prober.finish()
        waited, cut = prober.waited(gaps), prober.cut()
        print(f"\nsystemctl restart x3 under socket activation: {len(prober.probes)} attempts,"
              f" {prober.count('refused')} refused, {len(waited)} held in the backlog,"
              f" {len(cut)} closed unanswered by the old server; SIGTERM to READY=1:"
              f" {', '.join(f'{d:.0f}' for d in downtimes_ms)} ms")
        assert prober.count("refused") == 0
        assert waited, "no attempt fell into a restart: the test proved nothing"
        assert set(cut) <= CUT, cut
        assert len(cut) <= len(gaps), cut
        assert tidings.show("NRestarts")["NRestarts"] == "0"


def test_the_watchdog_restarts_a_server_whose_loop_is_stuck(payload: Path) -> None:
    # Short limits so the test is quick: pings every second, SIGABRT after 2 s
    # without one, SIGKILL 1 s later, restart 0.1 s after that.
    dropin = ("[Service]\nWatchdogSec=2s\nTimeoutAbortSec=1s\nTimeoutStopSec=5s\n"
              "RestartSec=100ms\n")
    with installed(payload, "watchdog", dropin) as tidings:
        tidings.systemctl("start", "tidings.service")
        stuck = tidings.server_pid()
        stopped = time.monotonic()
        tidings.box.run(["kill", "-STOP", str(stuck)])  # the loop stops: no more pings
        deadline = time.monotonic() + 60
        state = tidings.show("NRestarts", "ActiveState", "SubState")
        while state != {"NRestarts": "1", "ActiveState": "active", "SubState": "running"}:
            # systemd's state changes: nothing here to wait on but its answers.
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
            state = tidings.show("NRestarts", "ActiveState", "SubState")
        print(f"\nwatchdog: stuck loop to a new server ready: {time.monotonic() - stopped:.1f} s"
              f" (WatchdogSec=2s, TimeoutAbortSec=1s, RestartSec=100ms)")
        journal = tidings.journal()
        assert "Watchdog timeout (limit 2s)!" in journal
        assert "Failed with result 'watchdog'" in journal
        assert tidings.server_pid() != stuck
        assert _get(tidings.port).startswith(b"HTTP/1.1 200")


def test_without_the_socket_unit_the_server_binds_its_ports_itself(payload: Path) -> None:
    with installed(payload, "nosock", socket_unit=False) as tidings:
        tidings.systemctl("start", "tidings.service")
        assert tidings.show("StatusText")["StatusText"] == (
            f"listening on 127.0.0.1:{tidings.port}, redirecting port {tidings.redirect}")
        assert _get(tidings.port).startswith(b"HTTP/1.1 200")
        tidings.systemctl("stop", "tidings.service")
        with pytest.raises(ConnectionRefusedError):
            _get(tidings.port)


def test_the_hardened_server_uses_the_private_mariadb_over_its_socket(payload: Path) -> None:
    """tidings-mariadb.service (exposure 0.8) runs mariadbd; tidings.service reaches it."""
    prepare = ("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq"
               " --no-install-recommends mariadb-server >/dev/null"
               " && systemctl disable --now mariadb"
               " && tidings --data-dir /var/lib/tidings db bootstrap --private"
               " --service-user tidings")
    with installed(payload, "mariadb", prepare=prepare) as tidings:
        box = tidings.box
        tidings.systemctl("start", "tidings-mariadb.service", "tidings.service")
        assert _get(tidings.port).startswith(b"HTTP/1.1 200")
        mariadb = tidings.systemctl("show", "tidings-mariadb.service", "--property=ActiveState",
                                    "--property=MainPID")
        assert "ActiveState=active" in mariadb
        # The store is MariaDB, reached as the service user over the unix socket.
        added = box.run(["runuser", "-u", "tidings", "--", "tidings", "--data-dir",
                         "/var/lib/tidings", "user", "add", "alice"], env={
                             "TMPDIR": "/var/lib/tidings/tmp"})
        assert "created user alice" in added.stdout
        log = tidings.server_log()
        assert "started the private MariaDB server" not in log  # its own unit runs it
        errors = box.run("cat /var/lib/tidings/mariadb/*.err 2>/dev/null || true").stdout
        assert "Operation not permitted" not in errors, errors[-3000:]
        tidings.systemctl("stop", "tidings.service", "tidings-mariadb.service")
        assert tidings.box.run(["systemctl", "show", "--property=Result", "--value",
                                "tidings-mariadb.service"]).stdout.strip() == "success"


def test_the_hardened_server_obtains_a_certificate_over_acme(payload: Path,
                                                             tmp_path: Path) -> None:
    """Outbound HTTPS to a CA, and a TLS-ALPN-01 validation on the socket unit's port."""
    from tests.certs.live import HOSTNAME, SERVING
    from tests.support.pebble import Pebble

    with Pebble(tmp_path / "pebble") as pebble:
        acme = (f'\n[acme]\nhostnames = ["{HOSTNAME}"]\nemail = "ops@tidings.test"\n'
                f'issuers = ["{pebble.directory_url}"]\n'
                f'ca_bundle = "/etc/tidings/acme-ca.pem"\nchallenge = "tls-alpn-01"\n'
                "check_interval_s = 0.2\nretry_min_s = 0.5\nretry_max_s = 2.0\n")
        with installed(payload, "acme", port=pebble.tls_port, config=acme) as tidings:
            _install_file(tidings.box, "/etc/tidings/acme-ca.pem",
                          Path(pebble.ca_bundle).read_text())
            tidings.systemctl("start", "tidings.service")
            deadline = time.monotonic() + 120
            while not re.search(SERVING, log := tidings.server_log()):
                # The journal is what the server writes; nothing else says when.
                assert time.monotonic() < deadline, log[-3000:]
                time.sleep(0.2)
            assert "Operation not permitted" not in log
