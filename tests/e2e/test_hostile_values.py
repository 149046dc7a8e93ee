"""Issue 12, finding 1: out-of-range values from one user must not break anyone else.

A hostile sender in the default app sends every 64-bit value the store cannot
hold (ACK seq, REPORT_ACK seq, MESSAGE and READ group ids >= 2**63), a priority
above 15, and REST bodies with huge or wrongly typed numbers, while an honest
pair in another app exchanges reliable messages.  Each hostile connection is
closed with PROTOCOL_ERROR naming the field, each REST call gets a 4xx
problem+json, the honest pair loses nothing (p99 < 50 ms), and the server log
does not fill with tracebacks.  Runs on both storage backends (SPEC M14).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.protocol.wire import CloseCode, Message, Status, StatusReport
from appliance.protocol.wire.frames import FrameType
from tests.conftest import StoreBackend
from tests.support.client import Client
from tests.support.hostile import HONEST_APP, HONEST_USERS, HonestPair, RssWatch
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

_MSG = struct.Struct(">QQQQIIIBQB")


@dataclass
class World:
    server: ServerProcess
    tokens: dict[str, str]
    honest: dict[str, str]
    group_id: int
    secret: str


@pytest.fixture
def world(tmp_path: Path, store_backend: StoreBackend) -> Iterator[World]:
    data = tmp_path / "data"
    data.mkdir()
    store_backend.prepare(data)
    tokens, groups = provision(data, ["mallory", "victim"], {"g": ["mallory", "victim"]})
    honest, _ = provision(data, HONEST_USERS, app=HONEST_APP)
    secret = subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(data),
                             "app", "secret"], capture_output=True, text=True, check=True,
                            timeout=60).stdout.strip()
    server = ServerProcess(data)
    server.start()
    try:
        yield World(server, tokens, honest, groups["g"], secret)
    finally:
        server.stop()


def frame(ftype: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body), ftype) + body


def message_frame(*, expiry_s: int = 3600, mtype: int = 0, priority: int = 0,
                  group_id: int = 0, peer: bytes = b"victim") -> bytes:
    # Packed by hand: the codec refuses to encode these values.
    body = _MSG.pack(1, 0, 0, 0, expiry_s, mtype, 3, priority, group_id, len(peer))
    return frame(FrameType.MESSAGE, body + peer + b"hostile")


def read_frame(group_id: int, ids: tuple[int, ...], peer: bytes = b"victim") -> bytes:
    return frame(FrameType.READ, struct.pack(">QB", group_id, len(peer)) + peer
                 + struct.pack(f">H{len(ids)}Q", len(ids), *ids))


BIG = 2**63
#: (what, raw frame after HELLO, the field the close reason must name)
WIRE_CASES = [
    ("ACK seq 2**63", frame(FrameType.ACK, struct.pack(">HQ", 1, BIG)), "seq"),
    ("ACK seq 2**64-1", frame(FrameType.ACK, struct.pack(">HQQ", 2, 5, 2**64 - 1)), "seq"),
    ("REPORT_ACK 2**63", frame(FrameType.REPORT_ACK, struct.pack(">Q", BIG)), "report_seq"),
    ("MESSAGE group 2**63", message_frame(group_id=BIG, peer=b""), "group_id"),
    ("real-time MESSAGE group 2**63", message_frame(group_id=BIG, peer=b"", expiry_s=0),
     "group_id"),
    ("READ group 2**63", read_frame(BIG, (1,), peer=b"victim"), "group_id"),
    ("MESSAGE priority 16", message_frame(priority=16), "priority"),
    ("MESSAGE priority 255", message_frame(priority=255), "priority"),
    ("MESSAGE type 2**32-1", message_frame(mtype=2**32 - 1), "type"),
]


async def _status_of(client: Client, msg_id: int) -> StatusReport:
    """The immediate STATUS for `msg_id`; copies of the user's earlier messages are skipped."""
    async with asyncio.timeout(3):
        while True:
            event = await client.next_event()
            if isinstance(event, StatusReport) and event.id == msg_id and not event.report_seq:
                return event


async def _attack_wire(world: World) -> list[str]:
    problems = []
    host, port = world.server.host, world.server.port
    victim = await Client.connect(host, port, world.tokens["victim"], "v")
    try:
        for i, (what, data, field) in enumerate(WIRE_CASES):
            mallory = await Client.connect(host, port, world.tokens["mallory"], f"m{i}")
            # A good message first in the same write: it shares the attacker's batch.
            mallory.send(Message(1000 + i, b"victim", b"fine"))
            mallory.send_raw(data)
            try:
                closed = await mallory.closed_by_server(timeout=3)
            except TimeoutError:
                problems.append(f"{what}: the connection was not closed")
                continue
            finally:
                await mallory.close()
            if closed.code != CloseCode.PROTOCOL_ERROR or field not in closed.reason:
                problems.append(f"{what}: closed with {closed.code} {closed.reason!r}")
            # The victim, in the attacker's own app, still gets messages.
            sender = await Client.connect(host, port, world.tokens["mallory"], "honest-m")
            sender.send(Message(2000 + i, b"victim", b"after"))
            try:
                status = await _status_of(sender, 2000 + i)
            except TimeoutError:
                problems.append(f"{what}: a later message got no answer")
                continue
            finally:
                await sender.close()
            if status.status != Status.SENT:
                problems.append(f"{what}: a later message got {Status(status.status).name}")
    finally:
        await victim.close()
    return problems


def test_out_of_range_wire_values_close_one_connection_and_hurt_no_one(world: World) -> None:
    before = len(world.server.output)

    async def go() -> tuple[list[str], HonestPair, RssWatch]:
        assert world.server.proc is not None
        with RssWatch(world.server.proc.pid) as rss:
            async with HonestPair(world.server, world.honest) as honest:
                try:
                    problems = await _attack_wire(world)
                except Exception as exc:  # noqa: BLE001 - e.g. the store refuses every login
                    problems = [f"the attack broke the server: {exc!r}"]
                await asyncio.sleep(0.3)  # a few more honest round trips after the last one
        return problems, honest, rss

    problems, honest, rss = asyncio.run(go())
    print(f"\nwire values: {rss}, honest p99 {honest.p99 * 1000:.1f} ms over {honest.sent},"
          f" failures {honest.failures[:2]}")
    log = world.server.output[before:]
    assert not problems, "\n".join(problems)
    honest.assert_healthy()
    assert "Traceback" not in log, log[-3000:]
    # At most one line per incident (the close itself is not logged at INFO).
    assert log.count("\n") <= len(WIRE_CASES), log


# --- REST ------------------------------------------------------------------------------------


def rest(world: World, method: str, path: str, raw: bytes) -> tuple[int, str, Any]:
    conn = http.client.HTTPConnection(world.server.host, world.server.port, timeout=30)
    try:
        conn.request(method, path, body=raw, headers={"Authorization": f"Bearer {world.secret}",
                                                      "Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        return (response.status, response.getheader("content-type") or "",
                json.loads(payload) if payload else None)
    finally:
        conn.close()


def _msg(**fields: Any) -> bytes:
    return json.dumps({"from": "mallory", "to": "victim", "text": "x", **fields}).encode()


#: (what, method, path, body, the field the problem must name or None)
REST_CASES: list[tuple[str, str, str, bytes, str | None]] = [
    ("group 2**63", "POST", "/v1/messages",
     json.dumps({"from": "mallory", "group": 2**63, "text": "x"}).encode(), "group"),
    ("group 2**64", "POST", "/v1/messages",
     json.dumps({"from": "mallory", "group": 2**64, "text": "x"}).encode(), "group"),
    ("id 2**64", "POST", "/v1/messages", _msg(id=2**64), "id"),
    ("refid -1", "POST", "/v1/messages", _msg(refid=-1), "refid"),
    ("priority 16", "POST", "/v1/messages", _msg(priority=16), "priority"),
    ("type 2**32-1", "POST", "/v1/messages", _msg(type=2**32 - 1), "type"),
    ("expiry_s true", "POST", "/v1/messages", _msg(expiry_s=True), "expiry_s"),
    ("priority 1.5", "POST", "/v1/messages", _msg(priority=1.5), "priority"),
    ("ttl_s 2**62", "POST", "/v1/users/victim/tokens", json.dumps({"ttl_s": 2**62}).encode(),
     "ttl_s"),
    ("ttl_s 10**30", "POST", "/v1/users/victim/tokens", json.dumps({"ttl_s": 10**30}).encode(),
     "ttl_s"),
    ("ttl_s true", "POST", "/v1/users/victim/tokens", b'{"ttl_s": true}', "ttl_s"),
    ("huge integer literal", "POST", "/v1/messages",
     b'{"from": "mallory", "to": "victim", "text": "x", "id": ' + b"9" * 5000 + b"}", None),
    ("nested 100000 deep", "POST", "/v1/messages", b"[" * 100_000 + b"]" * 100_000, None),
    ("nested objects", "POST", "/v1/users", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, None),
    ("lone surrogate in text", "POST", "/v1/messages",
     b'{"from": "mallory", "to": "victim", "text": "\\ud800"}', None),
    ("lone surrogate in address", "POST", "/v1/users", b'{"address": "a\\udfff"}', None),
    ("lone surrogate in group name", "POST", "/v1/groups", b'{"name": "\\ud800"}', None),
    ("lone surrogate in a key", "POST", "/v1/users", b'{"\\ud800": 1, "address": "q"}', None),
    ("group name of 1 MB", "POST", "/v1/groups",
     json.dumps({"name": "n" * 1_000_000}).encode(), "name"),
    ("bad UTF-8", "POST", "/v1/users", b'{"address": "\xff\xfe"}', None),
    ("NaN", "POST", "/v1/messages", _msg()[:-1] + b', "priority": NaN}', None),
]


def test_out_of_range_rest_values_are_problems_and_hurt_no_one(world: World) -> None:
    before = len(world.server.output)

    def attack() -> list[str]:
        problems = []
        for what, method, path, body, field in REST_CASES:
            try:
                status, ctype, doc = rest(world, method, path, body)
            except (OSError, http.client.HTTPException) as exc:
                problems.append(f"{what}: {exc!r}")
                continue
            if not 400 <= status < 500 or ctype != "application/problem+json":
                problems.append(f"{what}: {status} {ctype} {str(doc)[:200]}")
            elif field is not None and doc.get("field") != field:
                problems.append(f"{what}: the problem names {doc.get('field')!r}, not {field!r}:"
                                f" {str(doc)[:200]}")
        return problems

    async def go() -> tuple[list[str], HonestPair, RssWatch]:
        assert world.server.proc is not None
        with RssWatch(world.server.proc.pid) as rss:
            async with HonestPair(world.server, world.honest) as honest:
                problems = await asyncio.to_thread(attack)
                await asyncio.sleep(0.3)
        return problems, honest, rss

    problems, honest, rss = asyncio.run(go())
    print(f"\nREST values: {rss}, honest p99 {honest.p99 * 1000:.1f} ms over {honest.sent},"
          f" failures {honest.failures[:2]}")
    log = world.server.output[before:]
    assert not problems, "\n".join(problems)
    honest.assert_healthy()
    assert "Traceback" not in log, log[-3000:]
    # The app's own messages still flow after the abuse.
    status, _, doc = rest(world, "POST", "/v1/messages", _msg(id=77))
    assert (status, doc["status"]) == (201, "SENT"), doc
