"""`tidings upgrade` on a booted systemd (Debian 12 under systemd-nspawn).

Release N is installed by hand (executable, user, directories, unit, a
SQLite config on a free port); messages wait for an offline recipient;
`tidings upgrade` to N+1 restarts the service through systemd and the queued
messages are delivered after it, each once; `tidings upgrade` to the broken
N+1' (its `serve` exits at once) fails, is rolled back, and N+1 runs again
with nothing lost.  Figures: systemd's downtime (SIGTERM of N to READY=1 of
N+1) and the rollback time.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.protocol.wire import Message, Status, StatusReport
from tests.support.client import Client
from tests.support.components import REPO, missing
from tests.support.container import Container, booted
from tests.support.traffic import SENTINEL_ID, drain, register_device

pytestmark = pytest.mark.slow

CONFIG = "/etc/tidings/tidings.toml"
DATA = "/var/lib/tidings"
#: The CLI as the service user, as an operator would run it with sudo -u.
AS_SERVICE = (f"runuser -u tidings -- env TMPDIR={DATA}/tmp tidings --config {CONFIG}"
              f" --data-dir {DATA}")


def free_port() -> int:
    """A port free now.  The unit's config needs a number before the service starts
    (no port 0 there), and the container shares the host's network."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def install_by_hand(box: Container, port: int) -> None:
    """Release N from /opt/payload: what installer/install.sh and `tidings setup` do."""
    box.run(f"""set -e
install -m 0755 /opt/payload/tidings /usr/local/bin/tidings
useradd --system --no-create-home --home-dir {DATA} --shell /usr/sbin/nologin tidings
install -d -m 0750 -o tidings -g tidings {DATA} {DATA}/tmp
install -d -m 0755 /etc/tidings
printf '[server]\\nhost = "127.0.0.1"\\nport = {port}\\n' > {CONFIG}
chown root:tidings {CONFIG}; chmod 0640 {CONFIG}
install -m 0644 /opt/payload/tidings.service /etc/systemd/system/tidings.service
mkdir -p /etc/systemd/system/tidings.service.d
printf '[Service]\\nExecStart=\\nExecStart=%s serve\\n' \\
    "/usr/local/bin/tidings --config {CONFIG} --data-dir {DATA}" \\
    > /etc/systemd/system/tidings.service.d/test.conf
systemctl daemon-reload
systemctl enable --now tidings.service
""", timeout=300)


def tokens_in(box: Container, *users: str) -> dict[str, str]:
    for user in users:
        box.run(f"{AS_SERVICE} user add {user}", timeout=120)
    return {user: box.run(f"{AS_SERVICE} user token {user}", timeout=120).stdout.split()[-1]
            for user in users}


async def send_acknowledged(port: int, token: str, ids: range) -> None:
    """Send `ids` from s1 to the offline receiver; return once each is SENT."""
    client = await Client.connect("127.0.0.1", port, token, "s1")
    try:
        for msg_id in ids:
            client.send(Message(msg_id, b"receiver", f"s1:{msg_id}".encode()))
        acked: set[int] = set()
        while len(acked) < len(ids):
            event = await client.next_event(timeout=30)
            if isinstance(event, StatusReport) and not event.report_seq:
                assert event.status == Status.SENT, event
                acked.add(event.id)
    finally:
        await client.close()


def upgrade_in(box: Container, base_url: str, version: str) -> subprocess.CompletedProcess[str]:
    return box.run(["tidings", "upgrade", "--yes", "--base-url", base_url, "--version", version],
                   timeout=600, check=False)


@dataclass
class Figures:
    downtime_s: float
    rollback_s: float


def scenario(box: Container, base_url: str, port: int, n1: str, broken: str) -> Figures:
    """N installed and running in `box`: upgrade to `n1`, then to `broken` (rolled back)."""
    tokens = tokens_in(box, "s1", "receiver")
    asyncio.run(register_device("127.0.0.1", port, tokens["receiver"]))
    asyncio.run(send_acknowledged(port, tokens["s1"], range(1, 201)))

    done = upgrade_in(box, base_url, n1)
    assert done.returncode == 0, done.stdout + done.stderr
    downtime = re.search(r"downtime ([0-9.]+) s", done.stdout)
    assert downtime is not None, done.stdout
    assert box.run("tidings --version").stdout.split()[-1] == n1
    assert box.run("systemctl is-active tidings.service").stdout.strip() == "active"
    got = asyncio.run(drain("127.0.0.1", port, tokens["receiver"], ("s1", tokens["s1"])))
    assert sorted(got) == [(b"s1", i) for i in range(1, 201)]
    assert set(got.values()) == {1}

    asyncio.run(send_acknowledged(port, tokens["s1"], range(1001, 1101)))
    done = upgrade_in(box, base_url, broken)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"ROLLED BACK to {n1}" in done.stderr
    rollback = re.search(r"ROLLED BACK to \S+ in ([0-9.]+) s", done.stderr)
    assert rollback is not None
    assert box.run("tidings --version").stdout.split()[-1] == n1
    assert box.run("systemctl is-active tidings.service").stdout.strip() == "active"
    got = asyncio.run(drain("127.0.0.1", port, tokens["receiver"], ("s1", tokens["s1"]),
                            sentinel_id=SENTINEL_ID + 1))
    assert sorted(got) == [(b"s1", i) for i in range(1001, 1101)]
    assert set(got.values()) == {1}
    backups = box.run(f"ls {DATA}/backups").stdout.split()
    assert len([b for b in backups if b.startswith("pre-upgrade-")]) == 2
    return Figures(float(downtime[1]), float(rollback[1]))


def test_upgrade_then_a_broken_release_rolled_back(request: pytest.FixtureRequest,
                                                   tmp_path: Path) -> None:
    try:
        releases = request.getfixturevalue("releases")
    except pytest.FixtureLookupError:
        missing("the `releases` fixture (tests/support/releases.py) is not in this checkout")
    versions = releases.versions
    payload = tmp_path / "payload"
    payload.mkdir()
    shutil.copy(releases.executable(versions.n), payload / "tidings")
    shutil.copy(REPO / "systemd" / "tidings.service", payload / "tidings.service")
    port = free_port()
    with booted("upgrade", payload) as box:
        install_by_hand(box, port)
        try:
            figures = scenario(box, releases.base_url, port, versions.n1, versions.broken)
        except BaseException:
            print(box.journal("tidings.service"))
            raise
    print(f"\nupgrade on systemd (SQLite): downtime {figures.downtime_s:.2f} s"
          f" (SIGTERM of {versions.n} to READY=1 of {versions.n1});"
          f" rollback from {versions.broken} in {figures.rollback_s:.2f} s")
