"""Issue 12 finding 4: HTTP/2 control-frame floods (CVE-2019-9512 PING, -9515 SETTINGS).

The attacker reads what it is sent (so this is about CPU, not memory) and
reconnects whenever it is cut off.  An honest HTTP/2 client (the `h2`
package) times its requests meanwhile, and the honest native pair of another
app keeps exchanging reliable messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from appliance.transport.bounds import REFUSAL_BURST
from tests.support.hostile import HONEST_APP, HONEST_USERS, RSS_BUDGET_BYTES, HonestPair, RssWatch
from tests.support.provision import provision
from tests.support.server import ServerProcess
from tests.transport.hostile_peers import H2_PING, H2_PREFACE, H2_SETTINGS, h2_frame

pytestmark = pytest.mark.slow

FLOOD_S = 5.0
ENHANCE_YOUR_CALM = 0xB
_GOAWAY_HEAD = b"\x00\x00\x08\x07\x00\x00\x00\x00\x00"  # GOAWAY, 8 bytes, stream 0


@pytest.fixture
def world(data_dir: Path) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    honest, _ = provision(data_dir, HONEST_USERS, app=HONEST_APP)
    server = ServerProcess(data_dir)
    server.start()
    try:
        yield server, honest
    finally:
        server.stop()


class ControlFlood(threading.Thread):
    """Sends `frame` as fast as it can, reads (and drops) the answers, reconnects when cut."""

    def __init__(self, server: ServerProcess, frame: bytes, duration_s: float) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.burst = frame * 500
        self.duration_s = duration_s
        self.frames = 0
        self.connections = 0
        self.goaway_codes: list[int] = []

    def run(self) -> None:
        end = time.monotonic() + self.duration_s
        while time.monotonic() < end:
            self._one_connection(end)

    def _one_connection(self, end: float) -> None:
        sock = socket.create_connection((self.server.host, self.server.port), timeout=2)
        self.connections += 1
        reader = _Reader(sock)
        reader.start()
        with contextlib.suppress(OSError):
            sock.sendall(H2_PREFACE + h2_frame(H2_SETTINGS))
            while time.monotonic() < end and not reader.done:
                sock.sendall(self.burst)
                self.frames += 500
        reader.join(timeout=5)
        sock.close()
        at = reader.tail.find(_GOAWAY_HEAD)
        if at >= 0:
            self.goaway_codes.append(int.from_bytes(reader.tail[at + 13:at + 17], "big"))


class _Reader(threading.Thread):
    """Reads (and drops) what the server sends; keeps the first GOAWAY it sees."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.tail = b""
        self.done = False

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = self.sock.recv(1 << 20)
                if not data:
                    break
                self.tail = (self.tail + data)[-4096:]
                if _GOAWAY_HEAD in self.tail:
                    break
        self.done = True


class HonestH2(threading.Thread):
    """GET /v1/health on one HTTP/2 connection, one request at a time; latencies in seconds."""

    def __init__(self, server: ServerProcess, duration_s: float) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.duration_s = duration_s
        self.latencies: list[float] = []
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001  # reported by the test
            self.error = exc

    def _run(self) -> None:
        sock = socket.create_connection((self.server.host, self.server.port), timeout=10)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        end = time.monotonic() + self.duration_s
        while time.monotonic() < end:
            stream = conn.get_next_available_stream_id()
            started = time.perf_counter()
            conn.send_headers(stream, [(":method", "GET"), (":path", "/v1/health"),
                                       (":scheme", "http"), (":authority", "x")],
                              end_stream=True)
            sock.sendall(conn.data_to_send())
            done = False
            while not done:
                data = sock.recv(65536)
                assert data, "the server closed the honest HTTP/2 connection"
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                        done = True
                sock.sendall(conn.data_to_send())
            self.latencies.append(time.perf_counter() - started)
            time.sleep(0.01)
        sock.close()

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


@pytest.mark.parametrize("kind", ["ping", "settings"])
def test_control_frame_flood_is_cut_off(world, kind: str) -> None:  # type: ignore[no-untyped-def]
    server, tokens = world
    frame = h2_frame(H2_PING, b"12345678") if kind == "ping" else h2_frame(H2_SETTINGS)
    assert server.proc is not None

    async def go() -> tuple[RssWatch, HonestPair, HonestH2, ControlFlood]:
        with RssWatch(server.proc.pid) as rss:  # type: ignore[union-attr]
            async with HonestPair(server, tokens) as honest:
                flood = ControlFlood(server, frame, FLOOD_S)
                h2_client = HonestH2(server, FLOOD_S)
                flood.start()
                h2_client.start()
                await asyncio.to_thread(flood.join)
                await asyncio.to_thread(h2_client.join)
        return rss, honest, h2_client, flood

    rss, honest, h2_client, flood = asyncio.run(go())
    assert h2_client.error is None, h2_client.error
    print(f"\n{kind} flood: {flood.frames} frames on {flood.connections} connections,"
          f" GOAWAY codes {sorted(set(flood.goaway_codes))}; honest HTTP/2 p50"
          f" {h2_client.percentile(0.5) * 1000:.1f} ms p99 {h2_client.percentile(0.99) * 1000:.1f}"
          f" ms ({len(h2_client.latencies)} requests); honest native p99"
          f" {honest.p99 * 1000:.1f} ms; {rss}")
    assert flood.goaway_codes
    assert set(flood.goaway_codes) == {ENHANCE_YOUR_CALM}
    assert h2_client.percentile(0.5) < 0.010
    assert h2_client.percentile(0.99) < 0.050
    assert rss.growth < RSS_BUDGET_BYTES, rss
    honest.assert_healthy()


class RequestLoop:
    """GET /v1/health on one HTTP/2 connection, `MAX_STREAMS` at a time, counting answers."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.statuses: Counter[int] = Counter()
        self.retry_after: set[bytes] = set()
        self.goaway: int | None = None

    def run(self, count: int, *, until_refused: bool = False) -> None:
        """Send `count` requests (100 in flight), or until one is answered 429."""
        sent = answered = 0
        while answered < sent or sent < count:
            while sent - answered < 100 and sent < count:
                self.conn.send_headers(self.conn.get_next_available_stream_id(), [
                    (":method", "GET"), (":path", "/v1/health"), (":scheme", "http"),
                    (":authority", "x")], end_stream=True)
                sent += 1
            self.sock.sendall(self.conn.data_to_send())
            data = self.sock.recv(65536)
            if not data:
                return
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    headers = dict(event.headers)
                    self.statuses[int(headers[b":status"])] += 1
                    if b"retry-after" in headers:
                        self.retry_after.add(headers[b"retry-after"])
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    answered += 1
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.goaway = event.error_code
                    return
            if until_refused and self.statuses[429]:
                count = sent  # stop sending; collect what is in flight
            self.sock.sendall(self.conn.data_to_send())


def test_a_client_that_ignores_its_429s_is_sent_away(server: ServerProcess) -> None:
    """Answered 429 (with Retry-After) past the per-connection request rate, a client
    that kept sending cost the server a refusal each, for as long as it liked (a
    backend's array flood: ~3,000 refusals a second).  Past `REFUSALS_PER_S` refusals
    a second (burst `REFUSAL_BURST`): GOAWAY ENHANCE_YOUR_CALM.  A client that waits as told is
    served again, on the same connection."""
    polite = RequestLoop(server)
    polite.run(3000, until_refused=True)
    assert polite.statuses[200] >= 1000  # the burst
    assert polite.retry_after == {b"1"}
    time.sleep(1.0)  # Retry-After: 1
    before = polite.statuses[200]
    polite.run(100)
    assert polite.statuses[200] - before == 100
    assert polite.goaway is None

    rude = RequestLoop(server)
    rude.run(5000)
    assert rude.goaway == ENHANCE_YOUR_CALM
    assert rude.statuses[429] >= REFUSAL_BURST
    assert sum(rude.statuses.values()) < 5000
    polite.sock.close()
    rude.sock.close()
