"""The figures of `/metrics` move as the server works: a real server, real clients, curl.

Native clients in clear and over TLS, a WebSocket client and the REST API
send and receive; `/metrics` is scraped with curl over HTTP/1.1, HTTP/2 with
prior knowledge and HTTP/2 over TLS, and read with prometheus-client's parser.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST
from websockets.asyncio.client import connect as ws_connect

from appliance import __version__
from appliance.protocol.wire import Hello, Message, Role, Status, Welcome, WireConnection
from tests.conftest import tidings
from tests.metrics.scraping import H2_TLS, H2C, HTTP1, Samples, scrape, scrape_until, value
from tests.support.client import Client
from tests.support.provision import provision
from tests.support.server import ServerProcess

N = 5  # reliable messages alice sends bob
ACCEPTED = "tidings_messages_accepted_total"
DELIVERED = "tidings_messages_delivered_total"
COMMITS = "tidings_commit_duration_seconds"


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the server's self-signed certificate
    return context


async def _exchange(server: ServerProcess, tokens: dict[str, str]) -> None:
    """alice (TLS) sends bob (clear) N messages, one to nobody and one too large; bob
    acknowledges and reads them; alice sees every DELIVERED and READ report."""
    alice = await Client.connect(server.host, server.port, tokens["alice"], "a1",
                                 tls=_unverified())
    bob = await Client.connect(server.host, server.port, tokens["bob"], "b1")
    try:
        for i in range(1, N + 1):
            alice.send(Message(id=i, peer=b"bob", payload=b"hello %d" % i))
        alice.send(Message(id=100, peer=b"nobody", payload=b"lost"))
        alice.send(Message(id=101, peer=b"bob", payload=b"x" * (64 * 1024 + 1)))
        got = [await bob.message() for _ in range(N)]  # acknowledged as they come
        bob.read(b"alice", tuple(m.id for m in got))
        reports: dict[int, list[int]] = {}
        while sum(len(v) for v in reports.values()) < 3 * N + 2:
            status = await alice.status()
            reports.setdefault(status.status, []).append(status.id)
            if status.report_seq:
                alice.report_ack(status.report_seq)
        assert sorted(reports[Status.SENT]) == list(range(1, N + 1))
        assert reports[Status.INVALID_DEST] == [100]
        assert reports[Status.TOO_LARGE] == [101]
        assert sorted(reports[Status.DELIVERED]) == sorted(reports[Status.READ]) \
            == list(range(1, N + 1))
    finally:
        await alice.close()
        await bob.close()


async def _queue_for_offline(server: ServerProcess, tokens: dict[str, str], count: int) -> None:
    """erin's device registers and leaves; alice queues `count` messages for it."""
    erin = await Client.connect(server.host, server.port, tokens["erin"], "e1")
    await erin.close()
    alice = await Client.connect(server.host, server.port, tokens["alice"], "a0")
    try:
        for i in range(1, count + 1):
            alice.send(Message(id=1000 + i, peer=b"erin", payload=b"later"))
        for _ in range(count):
            assert (await alice.status()).status == Status.SENT
    finally:
        await alice.close()


def test_figures_move_with_the_traffic(data_dir: Path) -> None:
    tokens, _ = provision(data_dir, ["alice", "bob", "erin"])
    secret = tidings(data_dir, "app", "secret").stdout.strip()
    server = ServerProcess(data_dir)
    server.start()
    try:
        key = tidings(data_dir, "operator", "key").stdout.strip()
        asyncio.run(_queue_for_offline(server, tokens, 3))
        # The first scrape counts the stored queue (later ones reuse it for 10 s).
        before = _fresh(server, key, HTTP1)
        assert value(before, "tidings_queue_stored_deliveries") == 3
        assert value(before, ACCEPTED, status="sent") == 3
        assert value(before, "tidings_queue_uncommitted_messages") == 0
        assert value(before, "tidings_build_info", version=__version__) == 1
        assert value(before, "tidings_certificate_self_signed") == 1
        # Absent while self-signed: nothing to alert on.
        assert not [name for name, _ in before if name == "tidings_certificate_days_left"]

        asyncio.run(_exchange(server, tokens))
        _send_by_rest(server, secret)
        after = scrape_until(server, key, lambda f: value(f, DELIVERED, status="read")
                             - value(before, DELIVERED, status="read") >= N, *H2C)
        moved = _moved(before, after)
        assert moved == {"sent": N + 1, "invalid_dest": 1, "too_large": 1,
                         "delivered": N, "read": N, "expired": 0}, moved
        _check_histogram(before, after)
        assert value(after, "tidings_store_errors_total", operation="commit") == 0
    finally:
        server.stop()


def _moved(before: Samples, after: Samples) -> dict[str, float]:
    out = {s: value(after, ACCEPTED, status=s) - value(before, ACCEPTED, status=s)
           for s in ("sent", "invalid_dest", "too_large")}
    out.update({s: value(after, DELIVERED, status=s) - value(before, DELIVERED, status=s)
                for s in ("delivered", "read", "expired")})
    return out


def _check_histogram(before: Samples, after: Samples) -> None:
    """Commits were observed (one per batch), the buckets are cumulative and end at the count."""
    count = value(after, f"{COMMITS}_count")
    assert count - value(before, f"{COMMITS}_count") >= 1
    assert value(after, f"{COMMITS}_sum") > 0
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in after.items()
                     if name == f"{COMMITS}_bucket")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1] == (float("inf"), count)


def _fresh(server: ServerProcess, key: str, transport: tuple[str, ...]) -> Samples:
    return scrape_until(server, key, lambda f: True, *transport)


def _seen_by(server: ServerProcess, key: str, transport: tuple[str, ...],
             label: tuple[str, str]) -> Samples:
    """A scrape over `transport` whose render counts the scrape's own connection."""
    protocol, tls = label
    return scrape_until(server, key, lambda f: value(
        f, "tidings_connections", protocol=protocol, tls=tls) >= 1, *transport)


def _send_by_rest(server: ServerProcess, secret: str) -> None:
    """One message through POST /v1/messages: counted like any other."""
    done = subprocess.run(
        ["curl", "--silent", "--show-error", "--fail-with-body", "--header",
         f"Authorization: Bearer {secret}", "--json", json.dumps({"to": "bob", "text": "hi"}),
         f"http://{server.host}:{server.port}/v1/messages"],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["status"] == "SENT"


def test_connections_by_protocol_while_clients_are_connected(data_dir: Path) -> None:
    tokens, _ = provision(data_dir, ["alice", "bob", "carol"])
    server = ServerProcess(data_dir)
    server.start()
    try:
        key = tidings(data_dir, "operator", "key").stdout.strip()

        async def go() -> tuple[Samples, Samples, Samples, Samples]:
            alice = await Client.connect(server.host, server.port, tokens["alice"], "a1")
            bob = await Client.connect(server.host, server.port, tokens["bob"], "b1",
                                       tls=_unverified())
            carol = await _websocket(server, tokens["carol"])
            try:
                loop = asyncio.get_running_loop()
                # Each waits for a render made while its own connection was open.
                during = [await loop.run_in_executor(None, _seen_by, server, key, t, label)
                          for t, label in ((HTTP1, ("http1", "false")), (H2C, ("http2", "false")),
                                           (H2_TLS, ("http2", "true")))]
            finally:
                await alice.close()
                await bob.close()
                await carol.close()
            return (*during, await loop.run_in_executor(
                None, lambda: scrape_until(server, key, lambda f: value(
                    f, "tidings_sessions") == 0, *HTTP1)))

        http1, h2c, h2_tls, after = asyncio.run(go())
        for figures in (http1, h2c, h2_tls):
            assert value(figures, "tidings_connections", protocol="native", tls="false") == 1
            assert value(figures, "tidings_connections", protocol="native", tls="true") == 1
            assert value(figures, "tidings_connections", protocol="websocket",
                         tls="false") == 1
            assert value(figures, "tidings_sessions") == 3
        # The scrape's own connection is counted under its protocol.
        assert value(http1, "tidings_connections", protocol="http1", tls="false") >= 1
        assert value(h2c, "tidings_connections", protocol="http2", tls="false") >= 1
        assert value(h2_tls, "tidings_connections", protocol="http2", tls="true") >= 1
        assert value(after, "tidings_connections", protocol="native", tls="false") == 0
        assert value(after, "tidings_connections", protocol="websocket", tls="false") == 0
    finally:
        server.stop()


async def _websocket(server: ServerProcess, token: str):  # type: ignore[no-untyped-def]
    """A native session inside WebSocket binary messages, up to its WELCOME."""
    ws = await ws_connect(f"ws://{server.host}:{server.port}/v1/ws",
                          subprotocols=["tidings.v1"])  # type: ignore[list-item]
    codec = WireConnection(Role.CLIENT)
    await ws.send(codec.send(Hello(token.encode(), b"c1")))
    async with asyncio.timeout(10):
        while not any(isinstance(e, Welcome) for e in codec.receive_data(await ws.recv())):  # type: ignore[arg-type]
            pass
    return ws


def test_each_transport_serves_the_same_exposition(data_dir: Path) -> None:
    provision(data_dir, ["alice"])
    server = ServerProcess(data_dir)
    server.start()
    try:
        key = tidings(data_dir, "operator", "key").stdout.strip()
        for transport, version in ((HTTP1, "1.1"), (H2C, "2"), (H2_TLS, "2")):
            answer = scrape(server, *transport, key=key)
            assert (answer.status, answer.http_version) == (200, version), answer
            assert answer.content_type == CONTENT_TYPE_LATEST
            figures = _fresh(server, key, transport)
            assert value(figures, "process_resident_memory_bytes") > 0
            assert value(figures, "process_open_fds") > 0
    finally:
        server.stop()
