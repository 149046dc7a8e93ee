"""End to end through the frozen single-file executable built by packaging/build.sh.

The binary is `$TIDINGS_FROZEN_BIN`, else `<repo>/dist/tidings`.  Without it
these tests skip locally and fail in CI (``CI=true``), where a missing build
must not pass silently.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
from pathlib import Path

import pytest

from appliance import __version__
from appliance.protocol.wire import CloseCode, Message, Status
from appliance.system.bootloader import STALE_AFTER_S
from tests.support.client import Client
from tests.support.components import frozen_binary
from tests.support.server import ServerProcess

REPO = Path(__file__).resolve().parents[2]


def frozen(binary: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the frozen CLI on a data directory; fail with its stderr if it fails."""
    proc = subprocess.run([str(binary), "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stderr}"
    return proc


def test_frozen_version() -> None:
    frozen_bin = frozen_binary()
    proc = subprocess.run([str(frozen_bin), "--version"], capture_output=True, text=True,
                          timeout=60, check=True)
    assert proc.stdout.strip() == f"tidings, version {__version__}"


@pytest.mark.slow
def test_frozen_cli_and_server_deliver_a_message(tmp_path: Path) -> None:
    frozen_bin = frozen_binary()
    data = tmp_path / "data"
    data.mkdir()
    tokens: dict[str, str] = {}
    for user in ("alice", "bob"):
        assert f"created user {user}" in frozen(frozen_bin, data, "user", "add", user).stdout
    for user in ("alice", "bob"):
        issued = frozen(frozen_bin, data, "user", "token", user)
        tokens[user] = issued.stdout.strip()
        assert tokens[user], "no token on stdout"
        assert "expires" in issued.stderr

    server = ServerProcess(data, command=[str(frozen_bin)])
    server.start()

    async def go() -> int:
        alice = await Client.connect(server.host, server.port, tokens["alice"], "a1")
        bob = await Client.connect(server.host, server.port, tokens["bob"], "b1")
        try:
            alice.send(Message(1, b"bob", b"hello from the frozen build"))
            sent = await alice.status()
            assert (sent.id, sent.status) == (1, Status.SENT)

            got = await bob.message()  # acks it
            assert got.peer == b"alice"
            assert got.payload == b"hello from the frozen build"

            delivered = await alice.status()
            assert (delivered.id, delivered.status) == (1, Status.DELIVERED)
            alice.report_ack(delivered.report_seq)

            # SIGTERM through the onefile bootloader must reach the server,
            # which drains: every connected client is told GOING_AWAY.
            code = await asyncio.to_thread(server.stop)
            for client in (alice, bob):
                closed = await client.closed_by_server()
                assert closed.code == CloseCode.GOING_AWAY, server.output
            return code
        finally:
            await alice.close()
            await bob.close()

    try:
        code = asyncio.run(go())
    finally:
        server.stop()
    assert code == 0, server.output
    assert "Traceback" not in server.output


@pytest.mark.slow
def test_frozen_server_runs_on_uvloop(tmp_path: Path) -> None:
    frozen_bin = frozen_binary()
    # appliance.transport.loop falls back to asyncio silently when uvloop does
    # not import; asyncio's own loop logs "Using selector" at debug level, uvloop does not.
    data = tmp_path / "data"
    data.mkdir()
    server = ServerProcess(data, command=[str(frozen_bin), "--debug"])
    server.start()
    assert server.stop() == 0, server.output
    assert "Using selector" not in server.output, "frozen server fell back to asyncio"


@pytest.mark.slow
def test_frozen_client_commands_exchange_a_message(tmp_path: Path) -> None:
    frozen_bin = frozen_binary()
    data = tmp_path / "data"
    data.mkdir()
    tokens = {user: (frozen(frozen_bin, data, "user", "add", user),
                     frozen(frozen_bin, data, "user", "token", user))[1].stdout.strip()
              for user in ("alice", "bob")}
    server = ServerProcess(data, command=[str(frozen_bin)])
    server.start()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"),
           "TIDINGS_SERVER": f"{server.host}:{server.port}"}
    try:
        sent = subprocess.run([str(frozen_bin), "client", "send", "bob", "via the frozen SDK",
                               "--token", tokens["alice"]], env=env, capture_output=True,
                              text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith("sent ")
        got = subprocess.run([str(frozen_bin), "client", "listen", "--count", "1", "--token",
                              tokens["bob"]], env=env, capture_output=True, text=True,
                             timeout=60)
        assert got.returncode == 0, got.stderr
        assert got.stdout == "alice: via the frozen SDK\n"
    finally:
        server.stop()


@pytest.mark.slow
def test_frozen_server_obtains_a_certificate_from_acme(tmp_path: Path) -> None:
    """`acme`, `josepy` and `requests` work frozen: a real issuance from pebble."""
    from tests.certs.live import SERVING, acme_toml, openssl_verify, wait_for_output, write_roots
    from tests.support.pebble import Pebble

    frozen_bin = frozen_binary()
    data = tmp_path / "data"
    data.mkdir()
    with Pebble(tmp_path / "pebble") as pebble:
        config = tmp_path / "tidings.toml"
        config.write_text(acme_toml(pebble, challenge="tls-alpn-01", redirect=False))
        server = ServerProcess(data, command=[str(frozen_bin), "--config", str(config)])
        server.start(port=pebble.tls_port)
        try:
            wait_for_output(server, SERVING)
            openssl_verify(server.port, write_roots(pebble, tmp_path))
        finally:
            server.stop()


@pytest.mark.slow
def test_sigkill_of_the_frozen_executable_takes_the_server_with_it(tmp_path: Path) -> None:
    """SIGKILL reaches only the bootloader; its child, the server, must not outlive it
    holding the port and the store's lock (appliance/system/bootloader.py), and the
    files it unpacked are removed by a later start."""
    frozen_bin = frozen_binary()
    data = tmp_path / "data"
    data.mkdir()
    unpacked = tmp_path / "tmp"
    unpacked.mkdir()
    env = {"TMPDIR": str(unpacked)}
    server = ServerProcess(data, command=[str(frozen_bin)], env=env)
    server.start(timeout=60)
    assert server.proc is not None
    bootloader = server.proc.pid
    [child] = Path(f"/proc/{bootloader}/task/{bootloader}/children").read_text().split()
    pidfd = os.pidfd_open(int(child))
    try:
        os.kill(bootloader, signal.SIGKILL)
        # A pidfd turns readable once its process has exited: no polling, no sleep.
        assert select.select([pidfd], [], [], 30)[0], "the server outlived the bootloader"
    finally:
        os.close(pidfd)
        server.kill()
    [left] = list(unpacked.iterdir())  # a SIGKILLed bootloader cannot clean up
    aged = left.stat().st_mtime - 2 * STALE_AFTER_S
    os.utime(left, (aged, aged))
    # At once: the same port and the same data directory (lock) are free.
    again = ServerProcess(data, command=[str(frozen_bin)], env=env)
    again.start(timeout=60, port=server.port)
    try:
        assert again.port == server.port
        assert not left.exists(), "the leftover extraction was not removed"
    finally:
        assert again.stop() == 0, again.output
