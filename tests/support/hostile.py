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
import sys
import threading
from types import TracebackType

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
    and SENT received by the sender, whichever is later.  The pair runs in its
    own process (`tests.support.honest_child`): in the attacker's event loop, its
    latency would also measure the attacking client's own work (a CI run read
    183 ms while 3,000 attacking connects shared its loop).
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
        self._child: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HonestPair:
        a, b = self.users
        self._child = child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.honest_child", self.server.host,
            str(self.server.port), a, self.tokens[a], b, self.tokens[b], str(self.interval_s),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert child.stdout is not None
        async with asyncio.timeout(60):
            line = await child.stdout.readline()  # both connected: the rounds begin
        assert line == b"ready\n", line
        self._reader = asyncio.get_running_loop().create_task(self._read(child.stdout))
        return self

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        """The child's rounds, counted as they end (`Rounds` says how)."""
        while line := (await stdout.readline()).decode():
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "sent":
                self.sent += 1
            elif kind == "ok":
                self.latencies.append(float(rest))
                self.received += 1
            elif kind == "wrong":
                latency, _, what = rest.partition(" ")
                self.latencies.append(float(latency))
                self.failures.append(what)
            else:
                self.failures.append(rest if kind == "failed" else line)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        child = self._child
        assert child is not None
        assert child.stdin is not None
        child.stdin.close()  # stop
        async with asyncio.timeout(60):
            assert self._reader is not None
            await self._reader
            await child.wait()

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
