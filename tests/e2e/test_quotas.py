"""Quotas (issue 12 finding 6, SPEC M13), each attack through a real server.

Measured before the fix: 3,000 x 60 kB to one offline user were all SENT and
stored 372 MB; ACK frames naming 8,000 unknown seqs cost a DELETE each (an
honest user's latency went to 4.3 s); 3,000 device ids churned by connect and
close made 100 messages write 303,752 delivery rows.

Each test runs an honest pair in another app (`HonestPair`) and watches the
server's RSS (`RssWatch`).  With ``QUOTAS_BEFORE=1`` no quota is configured,
so that a copy of this file run from a checkout without quotas measures the
attacks before the fix (the assertions on the fix then fail; the figures
print on stderr).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.config.database import SQLITE_FILE
from appliance.protocol.wire import Ack, CloseCode, Message, ReadReport, Status, encode
from appliance.sdk import Client as SdkClient
from appliance.sdk.errors import InboxFullError, RateLimitedError
from tests.support.client import Client, ServerClosedError
from tests.support.hostile import (
    HONEST_APP,
    HONEST_USERS,
    RSS_BUDGET_BYTES,
    HonestPair,
    RssWatch,
)
from tests.support.provision import provision, write_config
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
BEFORE = os.environ.get("QUOTAS_BEFORE")
USERS = ["alice", "bob", "mallory", "carol"]
PAYLOAD = b"x" * 60_000
#: The quotas these tests run with: small enough that the attacks hit them fast.
QUOTAS = {"max_queued_messages": 1000, "max_queued_bytes": 8 * MIB,
          "max_app_queued_bytes": 12 * MIB, "device_registration_burst": 10,
          "device_registrations_per_hour": 6.0, "sweep_interval_s": 0.2}


@dataclass
class Live:
    server: ServerProcess
    tokens: dict[str, str]
    data: Path
    secret: str = ""

    def post(self, doc: dict[str, object]) -> tuple[int, dict[str, object]]:
        """POST /v1/messages as the app's backend: (HTTP status, JSON body)."""
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
        try:
            conn.request("POST", "/v1/messages", body=json.dumps(doc),
                         headers={"Authorization": f"Bearer {self.secret}"})
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def store_bytes(self) -> int:
        """Size of the SQLite database with its WAL."""
        return sum(p.stat().st_size for p in self.data.glob(SQLITE_FILE + "*"))

    def delivery_rows(self) -> int:
        with sqlite3.connect(self.data / SQLITE_FILE) as db:
            return int(db.execute("SELECT count(*) FROM deliveries").fetchone()[0])


def start(tmp_path: Path, **limits: object) -> Live:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    tokens, _ = provision(data, USERS)
    honest, _ = provision(data, HONEST_USERS, app=HONEST_APP)
    secret = subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(data),
                             "app", "secret"], capture_output=True, text=True, check=True,
                            timeout=60).stdout.strip()
    env: dict[str, str] = {}
    if not BEFORE:
        env["TIDINGS_CONFIG"] = str(write_config(tmp_path / "tidings.toml", **limits))
    server = ServerProcess(data, env=env)
    server.start()
    return Live(server, {**tokens, **honest}, data, secret)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    world = start(tmp_path, **QUOTAS)
    try:
        yield world
    finally:
        assert world.server.stop() == 0


async def send_all(client: Client, peer: bytes, count: int, payload: bytes, *,
                   first_id: int = 1, window: int = 200, expiry_s: int = 3600) -> Counter[int]:
    """Send `count` messages pipelined (`window` unanswered); count the answers by status."""
    statuses: Counter[int] = Counter()
    sent = answered = 0
    while answered < count:
        while sent < count and sent - answered < window:
            client.send(Message(first_id + sent, peer, payload, expiry_s=expiry_s))
            sent += 1
        status = await client.status(timeout=30)
        if not status.report_seq:
            statuses[status.status] += 1
            answered += 1
    return statuses


async def answer(client: Client, msg_id: int) -> int:
    """The immediate status of message `msg_id` (stored reports on the way are skipped)."""
    while True:
        status = await client.status(timeout=30)
        if status.id == msg_id and not status.report_seq:
            return status.status


def report(name: str, **figures: object) -> None:
    print(f"\n[{name}{' BEFORE' if BEFORE else ''}] "
          + ", ".join(f"{k}={v}" for k, v in figures.items()), file=sys.stderr)


def test_a_flood_to_an_offline_user_stops_at_the_inbox_quota(live: Live) -> None:
    """3,000 x 60 kB to one offline user: stored up to the quota, INBOX_FULL after."""
    server, tokens = live.server, live.tokens

    async def flood(honest: HonestPair) -> tuple[Counter[int], int]:
        """3,000 messages, then again (new ids) until the honest pair has run a while."""
        alice = await Client.connect(server.host, server.port, tokens["alice"], "a")
        statuses: Counter[int] = Counter()
        rounds = 0
        try:
            while rounds == 0 or honest.sent < 20:
                statuses += await send_all(alice, b"bob", 3000, PAYLOAD,
                                           first_id=1 + rounds * 3000)
                rounds += 1
        finally:
            await alice.close()
        return statuses, rounds

    async def go() -> tuple[Counter[int], int, float, HonestPair]:
        async with HonestPair(server, tokens) as honest:
            started = time.perf_counter()
            statuses, rounds = await flood(honest)
            return statuses, rounds, time.perf_counter() - started, honest

    store_before = live.store_bytes()
    with RssWatch(server.proc.pid) as rss:  # type: ignore[union-attr]
        statuses, rounds, took, honest = asyncio.run(go())
    grown = live.store_bytes() - store_before
    report("flood", statuses=dict(statuses), rounds=rounds, seconds=round(took, 2),
           store_mb=grown // MIB,
           rss=rss, honest_p99_ms=round(honest.p99 * 1000, 1))
    # 8 MiB / 60 kB = 139 messages fit the inbox; the rest is refused, not stored.
    assert statuses[Status.SENT] == 8 * MIB // len(PAYLOAD)
    # The rest is refused: INBOX_FULL, or RATE_LIMITED once alice is over her rate.
    assert statuses[Status.INBOX_FULL] >= 3000 - statuses[Status.SENT]
    assert statuses[Status.INBOX_FULL] + statuses[Status.RATE_LIMITED] \
        == 3000 * rounds - statuses[Status.SENT]
    assert grown < 32 * MIB, f"the store grew by {grown / MIB:.0f} MiB"
    assert rss.growth < RSS_BUDGET_BYTES, rss
    honest.assert_healthy()
    stored = statuses[Status.SENT]

    # The quota holds across a restart, and frees up as bob takes his messages.
    server.stop()
    server.start()

    async def after_restart() -> None:
        alice = await Client.connect(server.host, server.port, tokens["alice"], "a")
        try:
            alice.send(Message(5000, b"bob", PAYLOAD))
            assert await answer(alice, 5000) == Status.INBOX_FULL
            bob = await Client.connect(server.host, server.port, tokens["bob"], "b")
            ids = [(await bob.message()).id for _ in range(stored)]
            assert ids == list(range(1, stored + 1))  # nothing lost, in order
            # Once his ACKs are committed (a marker to himself proves it), there is room.
            bob.send(Message(1, b"bob", b"marker"))
            assert await answer(bob, 1) == Status.SENT
            alice.send(Message(5001, b"bob", PAYLOAD))
            assert await answer(alice, 5001) == Status.SENT
            assert (await bob.message()).id == 5001
            await bob.close()
        finally:
            await alice.close()

    asyncio.run(after_restart())


def test_b_a_group_skips_full_members_and_the_app_quota_holds(live: Live) -> None:
    """The app's total: 12 MiB over its users; past it, INBOX_FULL for everyone in it."""
    server, tokens = live.server, live.tokens

    async def go() -> None:
        alice = await Client.connect(server.host, server.port, tokens["alice"], "a")
        try:
            to_bob = await send_all(alice, b"bob", 200, PAYLOAD)
            to_carol = await send_all(alice, b"carol", 200, PAYLOAD, first_id=1000)
            # bob's 8 MiB, then carol's share of what is left of the app's 12 MiB.
            assert to_bob[Status.SENT] == 8 * MIB // len(PAYLOAD)
            assert to_carol[Status.SENT] == (12 * MIB - to_bob[Status.SENT] * len(PAYLOAD)) \
                // len(PAYLOAD)
            assert to_carol[Status.INBOX_FULL] == 200 - to_carol[Status.SENT]
        finally:
            await alice.close()
        # Another app is not affected.
        async with HonestPair(server, tokens) as honest:
            await asyncio.sleep(0.3)
        honest.assert_healthy()

    asyncio.run(go())


def test_c_send_rate_per_user(tmp_path: Path) -> None:
    """Above its rate a user hears RATE_LIMITED and nothing is stored or relayed."""
    live = start(tmp_path, send_rate_per_s=50.0, send_burst=100)
    server, tokens = live.server, live.tokens

    async def go() -> int:
        alice = await Client.connect(server.host, server.port, tokens["alice"], "a")
        bob = await Client.connect(server.host, server.port, tokens["bob"], "b")
        try:
            started = time.monotonic()
            statuses = await send_all(alice, b"bob", 1000, b"hi", window=1000)
            took = time.monotonic() - started
            report("rate", statuses=dict(statuses), seconds=round(took, 2))
            assert statuses[Status.SENT] <= 100 + 50 * took + 1
            assert statuses[Status.RATE_LIMITED] == 1000 - statuses[Status.SENT]
            got = [(await bob.message()).id for _ in range(statuses[Status.SENT])]
            # Real-time messages are not counted (never stored).
            alice.send(Message(2000, b"bob", b"now", expiry_s=0))
            assert await answer(alice, 2000) == Status.SENT
            await asyncio.sleep(2.1)  # refill the bucket (a rate, not readiness)
            alice.send(Message(3000, b"bob", b"marker"))
            assert await answer(alice, 3000) == Status.SENT
            rest = []
            while True:
                m = await bob.message()
                if m.id == 3000:
                    break
                rest.append(m.id)
            assert len(got) == statuses[Status.SENT]
            assert rest == [2000]  # and nothing of what was refused
            return statuses[Status.RATE_LIMITED]
        finally:
            await alice.close()
            await bob.close()

    try:
        refused = asyncio.run(go())
        # Each refusal is counted for the operator.
        key = subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(live.data),
                              "operator", "key"], capture_output=True, text=True, check=True,
                             timeout=60).stdout.strip()
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        conn.request("GET", "/v1/operator/stats", headers={"Authorization": f"Bearer {key}"})
        figures = json.loads(conn.getresponse().read())
        conn.close()
        assert figures["refusals"]["rate_limited"] == refused
    finally:
        assert server.stop() == 0


def test_d_ack_and_read_frames_naming_thousands_of_unknown_ids(live: Live) -> None:
    """8,000 unknown seqs per ACK (and ids per READ): a few statements, not one per seq."""
    server, tokens = live.server, live.tokens
    frames = 400

    async def go() -> tuple[float, HonestPair]:
        mallory = await Client.connect(server.host, server.port, tokens["mallory"], "m")
        async with HonestPair(server, tokens) as honest:
            started = time.perf_counter()
            n = 0
            while n < frames or honest.sent < 20:
                n += 1
                base = 10**12 + n * 8000
                mallory.send(Ack(tuple(range(base, base + 8000))))
                mallory.send(ReadReport(peer=b"alice", group_id=0,
                                        ids=tuple(range(base, base + 8000))))
                await mallory.writer.drain()
                await asyncio.sleep(0)  # drain() need not yield: let the honest pair run
            # A message after them is answered once they are all committed.
            mallory.send(Message(1, b"mallory", b"done"))
            while True:
                event = await mallory.next_event(timeout=120)
                if getattr(event, "id", None) == 1 and hasattr(event, "status"):
                    break
            took = time.perf_counter() - started
        await mallory.close()
        return took, honest

    with RssWatch(server.proc.pid) as rss:  # type: ignore[union-attr]
        took, honest = asyncio.run(go())
    report("ack-flood", frames=frames, seconds=round(took, 2), rss=rss,
           honest_p99_ms=round(honest.p99 * 1000, 1),
           worst_ms=sorted(round(x * 1000) for x in honest.latencies)[-5:])
    assert rss.growth < RSS_BUDGET_BYTES, rss
    honest.assert_healthy()


def test_e_device_churn_is_refused_and_bounded(live: Live) -> None:
    """3,000 new device ids: past the burst a HELLO is refused, so messages fan out to few."""
    server, tokens = live.server, live.tokens

    async def one(n: int) -> str:
        try:
            c = await Client.connect(server.host, server.port, tokens["mallory"], f"churn-{n}")
        except AssertionError:
            return "refused"
        except ServerClosedError as exc:
            if exc.code != CloseCode.TOO_MANY_DEVICES:
                return f"closed: {exc.code} {exc.reason}"
            # "too fast": over the registration rate; else over max_devices at once.
            return "refused: too fast" if "too fast" in exc.reason else "refused: at once"
        await c.close()
        return "welcome"

    async def churn() -> Counter[str]:
        outcomes: Counter[str] = Counter()
        gate = asyncio.Semaphore(4)  # below max_devices connected at once

        async def bounded(n: int) -> None:
            async with gate:
                outcomes[await one(n)] += 1

        await asyncio.gather(*(bounded(n) for n in range(3000)))
        return outcomes

    async def go() -> tuple[Counter[str], Counter[int], HonestPair]:
        async with HonestPair(server, tokens) as honest:
            outcomes = await churn()
            alice = await Client.connect(server.host, server.port, tokens["alice"], "a")
            statuses = await send_all(alice, b"mallory", 100, b"hello")
            await alice.close()
        return outcomes, statuses, honest

    with RssWatch(server.proc.pid) as rss:  # type: ignore[union-attr]
        outcomes, statuses, honest = asyncio.run(go())
    rows = live.delivery_rows()
    report("device-churn", outcomes=dict(outcomes), statuses=dict(statuses),
           delivery_rows=rows, rss=rss, honest_p99_ms=round(honest.p99 * 1000, 1))
    assert outcomes["welcome"] <= 11, outcomes  # the burst (and a token that refilled)
    assert outcomes["welcome"] + outcomes["refused: too fast"] \
        + outcomes["refused: at once"] == 3000, outcomes
    assert statuses[Status.SENT] == 100
    assert rows <= 100 * 11, rows
    assert rss.growth < RSS_BUDGET_BYTES, rss
    honest.assert_healthy()


def test_f_the_sdk_raises_inbox_full_and_does_not_resend_it(live: Live, tmp_path: Path) -> None:
    """Through the real SDK: INBOX_FULL is a typed error; the outbox does not keep it."""
    server, tokens = live.server, live.tokens

    async def go() -> None:
        seen: list[int] = []
        async with SdkClient(server.host, server.port, tokens["alice"],
                             store=tmp_path / "alice.db") as alice:
            alice.on_status(lambda s: seen.append(s.status))
            messages = [alice.send("bob", PAYLOAD) for _ in range(8 * MIB // len(PAYLOAD))]
            for m in messages:
                await m.sent()
            full = alice.send("bob", PAYLOAD)
            with pytest.raises(InboxFullError) as raised:
                await full.sent()
            assert raised.value.message_id == full.id
            assert full.status == Status.INBOX_FULL
        # A new session of the same store: nothing is resent.
        async with SdkClient(server.host, server.port, tokens["alice"],
                             store=tmp_path / "alice.db") as again:
            again.on_status(lambda s: seen.append(s.status))
            await again.wait_online()
            marker = again.send("alice", b"marker")
            await marker.sent()
        assert seen.count(Status.INBOX_FULL) == 1

    asyncio.run(go())


def test_g_the_sdk_resends_rate_limited_messages_until_sent(tmp_path: Path) -> None:
    """RATE_LIMITED through the SDK: visible as a status, resent with backoff, then SENT."""
    live = start(tmp_path, send_rate_per_s=20.0, send_burst=20)
    server, tokens = live.server, live.tokens

    async def go() -> None:
        seen: Counter[int] = Counter()
        errors: list[object] = []
        async with SdkClient(server.host, server.port, tokens["alice"],
                             store=tmp_path / "alice.db") as alice:
            alice.on_status(lambda s: seen.update([s.status]))
            alice.on_status(lambda s: errors.append(s.error) if s.error else None)
            await alice.wait_online()
            messages = [alice.send("bob", f"m{n}") for n in range(60)]
            async with asyncio.timeout(60):
                for m in messages:
                    await m.sent()
        assert seen[Status.RATE_LIMITED] > 0, seen
        # The app sees each refusal as a typed error while the SDK resends.
        assert len(errors) == seen[Status.RATE_LIMITED]
        assert all(isinstance(e, RateLimitedError) for e in errors), errors
        assert seen[Status.SENT] == 60

    try:
        asyncio.run(go())
    finally:
        assert server.stop() == 0


def test_h_rest_sends_hear_inbox_full_and_have_no_per_user_rate(tmp_path: Path) -> None:
    """The app's backend: INBOX_FULL is a 507 problem; the per-user send rate is not its."""
    live = start(tmp_path, max_queued_messages=3, send_rate_per_s=1.0, send_burst=1)
    try:
        answers = [live.post({"to": "bob", "text": f"m{n}"}) for n in range(4)]
        assert [code for code, _ in answers] == [201, 201, 201, 507]
        assert answers[3][1]["message_status"] == "INBOX_FULL"
        # Far above a user's 1 message/s, and none refused for its rate.
        assert {live.post({"to": "carol", "text": "x"})[0] for _ in range(3)} == {201}
    finally:
        assert live.server.stop() == 0


def test_i_sdk_refusals_a_message_is_resent_after_or_ends_with() -> None:
    """`sent()`: FAILED and RATE_LIMITED keep a queued message waiting (the SDK resends
    it); for a real-time one they are final typed errors, as INBOX_FULL always is."""
    from appliance.sdk.models import OutgoingMessage

    async def go() -> None:
        queued = OutgoingMessage(id=1, peer="bob", group_id=0, payload=b"x", expiry_s=60)
        waiting = asyncio.get_running_loop().create_task(queued.sent())
        await asyncio.sleep(0)
        queued._update(Status.RATE_LIMITED, 0)
        await asyncio.sleep(0)
        assert not waiting.done()
        queued._update(Status.SENT, 5)
        await waiting
        realtime = OutgoingMessage(id=2, peer="bob", group_id=0, payload=b"x", expiry_s=0)
        realtime._update(Status.RATE_LIMITED, 0)
        with pytest.raises(RateLimitedError):
            await realtime.sent()
        full = OutgoingMessage(id=3, peer="bob", group_id=0, payload=b"x", expiry_s=60)
        full._update(Status.INBOX_FULL, 0)
        with pytest.raises(InboxFullError):
            await full.sent()

    asyncio.run(go())


def test_j_a_real_time_flood_to_an_offline_user_is_paced_not_buffered(live: Live) -> None:
    """Expiry-0 messages to an offline user each wait on a store lookup (USER_OFFLINE or
    INVALID_DEST): a sender that writes as fast as loopback allows, and reads its answers,
    once had one pending task per message and grew the server by 763 MiB."""
    frame = encode(Message(1, b"carol", PAYLOAD, expiry_s=0))

    async def go() -> None:
        mallory = await Client.connect(live.server.host, live.server.port,
                                       live.tokens["mallory"], "m1")

        async def drain_answers() -> None:  # an attacker that reads: no slow consumer
            while await mallory.reader.read(1 << 20):
                pass
        reader = asyncio.get_running_loop().create_task(drain_answers())
        with RssWatch(live.server.proc.pid) as rss:
            async with HonestPair(live.server, live.tokens) as honest:
                deadline = time.monotonic() + 4
                sent = 0
                while time.monotonic() < deadline:
                    mallory.writer.write(frame * 16)
                    sent += 16
                    await mallory.writer.drain()
        reader.cancel()
        await mallory.close()
        report("realtime-offline-flood", sent=sent, rss=rss, honest_p99=honest.p99)
        assert rss.growth < RSS_BUDGET_BYTES, rss
        honest.assert_healthy()

    asyncio.run(go())
