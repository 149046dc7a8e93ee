"""What every attack test measures: the server's RSS, and an honest client's experience.

The edge rule (issue 12): no attack may raise the server's RSS by more than
`RSS_BUDGET_BYTES`, and an honest client in *another app* keeps p99 below
`HONEST_P99_S` and loses nothing while the attack runs.  Tests use:

    with RssWatch(server.proc.pid) as rss:
        async with HonestPair(server, tokens) as honest:
            ... attack ...
    assert rss.growth < RSS_BUDGET_BYTES, rss
    honest.assert_healthy()
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import TracebackType

from appliance.protocol.wire import Message, Status, StatusReport
from tests.support.client import Client
from tests.support.server import ServerProcess

RSS_BUDGET_BYTES = 64 * 1024 * 1024
HONEST_P99_S = 0.050
#: Apps for the honest pair: provision(data_dir, HONEST_USERS, app=HONEST_APP).
HONEST_APP = "honest"
HONEST_USERS = ["honest-a", "honest-b"]


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` now (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssWatch:
    """Samples a process's RSS every 20 ms in a thread; `peak` and `growth` over `start`."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.start = self.peak = self.end = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssWatch:
        self.start = self.peak = rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError, RuntimeError):
            self.end = rss_bytes(self.pid)
            self.peak = max(self.peak, self.end)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, RuntimeError):
                return

    @property
    def growth(self) -> int:
        return self.peak - self.start

    def __repr__(self) -> str:
        mib = 1024 * 1024
        return (f"RssWatch(start={self.start / mib:.1f} MiB, peak={self.peak / mib:.1f} MiB, "
                f"growth={self.growth / mib:.1f} MiB)")


class HonestPair:
    """Two users of another app exchanging reliable messages every `interval_s`.

    Each round trip is timed from MESSAGE sent to MESSAGE received by the peer
    and SENT received by the sender, whichever is later.
    """

    def __init__(self, server: ServerProcess, tokens: dict[str, str],
                 interval_s: float = 0.02, users: list[str] = HONEST_USERS) -> None:
        self.server = server
        self.tokens = tokens
        self.interval_s = interval_s
        self.users = users
        self.latencies: list[float] = []
        self.sent = 0
        self.received = 0
        self.failures: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def __aenter__(self) -> HonestPair:
        a, b = self.users
        self._sender = await Client.connect(self.server.host, self.server.port, self.tokens[a],
                                            "honest-dev")
        self._receiver = await Client.connect(self.server.host, self.server.port,
                                              self.tokens[b], "honest-dev")
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task
        await self._sender.close()
        await self._receiver.close()

    async def _run(self) -> None:
        peer = self.users[1].encode()
        next_id = 1
        while not self._stop.is_set():
            started = time.perf_counter()
            self._sender.send(Message(id=next_id, peer=peer, payload=b"honest"))
            self.sent += 1
            try:
                status = await self._sent(next_id)
                got = await self._receiver.message(timeout=5)
            except (TimeoutError, AssertionError, ConnectionError) as exc:
                self.failures.append(f"message {next_id}: {exc!r}")
                return
            if status.status != Status.SENT:
                self.failures.append(f"message {next_id}: {status!r}")
            if got.id != next_id:
                self.failures.append(f"expected message {next_id}, got {got!r}")
            else:
                self.received += 1
            self.latencies.append(time.perf_counter() - started)
            next_id += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)

    async def _sent(self, message_id: int) -> StatusReport:
        """The sender's answer for `message_id`; stored reports on the way are confirmed."""
        while True:
            status = await self._sender.status(timeout=5)
            if status.report_seq:
                self._sender.report_ack(status.report_seq)
            if status.id == message_id and not status.report_seq:
                return status

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0

    def assert_healthy(self) -> None:
        """Nothing lost, every answer right, p99 under the budget, and enough samples."""
        assert not self.failures, self.failures
        assert self.received == self.sent, (self.sent, self.received)
        assert self.sent >= 5, f"only {self.sent} honest round trips: the attack ran too briefly"
        assert self.p99 < HONEST_P99_S, f"honest p99 {self.p99 * 1000:.1f} ms"
