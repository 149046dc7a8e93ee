"""TLS on the shared port: openssl s_client, curl, a native client, websockets (wss)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import signal
import ssl
import subprocess
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as ws_connect

from appliance.certs.selfsigned import ensure_self_signed
from appliance.protocol.wire import (
    Hello,
    Message,
    Role,
    Status,
    StatusReport,
    Welcome,
    WireConnection,
)
from tests.support.client import Client
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def tls_world(data_dir: Path):  # type: ignore[no-untyped-def]
    tokens, _ = provision(data_dir, ["alice", "bob"])
    server = ServerProcess(data_dir)
    server.start()
    cert = data_dir / "tls" / "self-signed.crt"
    yield server, tokens, cert
    server.stop()


def s_client(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", "s_client", "-connect", f"{server.host}:{server.port}",
                           "-servername", "localhost", *args], input="", capture_output=True,
                          text=True, timeout=30)


def test_openssl_sees_the_modern_profile_only(tls_world) -> None:  # type: ignore[no-untyped-def]
    server, _, cert = tls_world
    assert cert.is_file()  # generated once, in the data directory
    for version in ("-tls1_3", "-tls1_2"):
        ok = s_client(server, version, "-alpn", "http/1.1")
        assert ok.returncode == 0, ok.stderr
        assert "ALPN protocol: http/1.1" in ok.stdout
        cipher = next(line for line in ok.stdout.splitlines() if "Cipher is" in line)
        assert any(aead in cipher for aead in ("GCM", "CHACHA20")), cipher
    for old in ("-tls1_1", "-tls1"):
        refused = s_client(server, old)
        assert refused.returncode != 0
    cbc = s_client(server, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA")
    assert cbc.returncode != 0  # no CBC suites, only AEAD


def test_curl_native_and_websocket_clients_over_tls(tls_world) -> None:  # type: ignore[no-untyped-def]
    server, tokens, cert = tls_world
    out = subprocess.run(["curl", "-sS", "--cacert", str(cert), "--max-time", "20",
                          f"https://localhost:{server.port}/v1/health"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"status": "ok"}

    async def go() -> None:
        ctx = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection(server.host, server.port, ssl=ctx,
                                                       server_hostname="localhost")
        codec = WireConnection(Role.CLIENT)
        writer.write(codec.send(Hello(tokens["alice"].encode(), b"tls-device")))
        events: list[object] = []

        async def next_event() -> object:
            while not events:
                async with asyncio.timeout(10):
                    data = await reader.read(65536)
                assert data, "server closed the TLS connection"
                events.extend(codec.receive_data(data))
            return events.pop(0)

        assert isinstance(await next_event(), Welcome)
        bob = await Client.connect(server.host, server.port, tokens["bob"], "plain")
        writer.write(codec.send(Message(5, b"bob", b"over TLS")))
        status = await next_event()
        assert isinstance(status, StatusReport)
        assert status.status == Status.SENT
        assert (await bob.message()).payload == b"over TLS"

        ws = await ws_connect(f"wss://localhost:{server.port}/v1/ws", ssl=ctx,
                              subprotocols=["tidings.v1"])  # type: ignore[list-item]
        ws_codec = WireConnection(Role.CLIENT)
        await ws.send(ws_codec.send(Hello(tokens["bob"].encode(), b"wss-device")))
        async with asyncio.timeout(10):
            assert isinstance(ws_codec.receive_data(await ws.recv())[0], Welcome)
        await ws.close()
        writer.close()
        async with asyncio.timeout(10):
            await writer.wait_closed()
        await bob.close()

    asyncio.run(go())


def _cert_pair(directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True)
    cert, key = ensure_self_signed(directory, dt.datetime.now(dt.UTC))
    return cert.rename(directory / f"{name}.crt"), key.rename(directory / f"{name}.key")


def _fingerprint(server: ServerProcess) -> str:
    pem = ssl.get_server_certificate((server.host, server.port))
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def test_sighup_reloads_the_certificate_without_dropping_connections(data_dir: Path,
                                                                      tmp_path: Path) -> None:
    first_cert, first_key = _cert_pair(tmp_path / "one", "one")
    second_cert, second_key = _cert_pair(tmp_path / "two", "two")
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    live_cert.write_bytes(first_cert.read_bytes())
    live_key.write_bytes(first_key.read_bytes())
    config = tmp_path / "tidings.toml"
    config.write_text(f'[tls]\ncert = "{live_cert}"\nkey = "{live_key}"\n')
    tokens, _ = provision(data_dir, ["alice", "bob"])
    server = ServerProcess(data_dir, env={"TIDINGS_CONFIG": str(config)})
    server.start()
    try:
        before = _fingerprint(server)

        async def go() -> None:
            ctx = ssl.create_default_context(cafile=str(first_cert))
            reader, writer = await asyncio.open_connection(server.host, server.port, ssl=ctx,
                                                           server_hostname="localhost")
            codec = WireConnection(Role.CLIENT)
            writer.write(codec.send(Hello(tokens["alice"].encode(), b"stays")))
            async with asyncio.timeout(10):
                assert isinstance(codec.receive_data(await reader.read(65536))[0], Welcome)
            # Renewal: new files, then SIGHUP.
            live_cert.write_bytes(second_cert.read_bytes())
            live_key.write_bytes(second_key.read_bytes())
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGHUP)
            async with asyncio.timeout(20):
                # Each probe is a real TLS handshake: the first with the new
                # certificate ends the wait (the signal is handled asynchronously).
                while await asyncio.to_thread(_fingerprint, server) == before:
                    pass
            bob = await Client.connect(server.host, server.port, tokens["bob"], "b")
            writer.write(codec.send(Message(1, b"bob", b"after the reload")))
            assert (await bob.message()).payload == b"after the reload"  # old one still up
            writer.close()
            async with asyncio.timeout(10):
                await writer.wait_closed()
            await bob.close()

        asyncio.run(go())
    finally:
        server.stop()
    assert "TLS certificate reloaded" in server.output


def test_half_a_tls_configuration_names_the_missing_key(data_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text('[tls]\ncert = "/nonexistent.crt"\n')
    proc = subprocess.run([*ServerProcess(data_dir).command, "--data-dir", str(data_dir),
                           "--config", str(config), "serve", "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "tls.key" in proc.stderr
    config.write_text('[tls]\ncert = "/nonexistent.crt"\nkey = "/nonexistent.key"\n')
    proc = subprocess.run([*ServerProcess(data_dir).command, "--data-dir", str(data_dir),
                           "--config", str(config), "serve", "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "tls.cert: no such file: /nonexistent.crt" in proc.stderr
