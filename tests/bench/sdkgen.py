"""The 1:1 reliable scenario driven through the SDK (issue #3), in one process.

Spawned by the harness like loadgen (``kind: "sdk"``), same stdin/stdout
protocol.  50 sender and 50 receiver `appliance.sdk.Client`s, each with its own
local store; every sender keeps `window` messages without SENT in flight
(closed loop, as loadgen's reliable mode) and the SDK does the rest: outbox,
ACKs after storing, REPORT_ACKs, statuses.  What it measures is the SDK's own
cost next to loadgen's hand-rolled frames.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from appliance.sdk import Client, IncomingMessage, Status, StatusUpdate


class _Counters:
    __slots__ = ("delivered", "other", "received", "sent")

    def __init__(self) -> None:
        self.received = self.sent = self.delivered = self.other = 0


async def run_sdk_pairs(spec: dict[str, Any], control: Any, emit: Any, cpu_seconds: Any,
                        slope: Any, sleep_until: Any) -> None:
    host, port, window = spec["host"], spec["port"], spec.get("window", 200)
    stores = Path(spec["store_dir"])
    await asyncio.to_thread(stores.mkdir, parents=True, exist_ok=True)
    payload = bytes(spec["payload"])
    counts = _Counters()
    running = False
    senders: list[Client] = []
    receivers: list[Client] = []
    for i, (s_token, r_token, r_address) in enumerate(spec["pairs"]):
        sender = Client(host, port, s_token, store=stores / f"s{i}.sqlite3")
        receiver = Client(host, port, r_token, store=stores / f"r{i}.sqlite3")

        def on_message(_: IncomingMessage) -> None:
            counts.received += 1

        def on_status(update: StatusUpdate, sender: Client = sender,
                      peer: str = r_address) -> None:
            if update.status == Status.SENT:
                counts.sent += 1
                if running:
                    sender.send(peer, payload)  # closed loop: one out, one in
            elif update.status == Status.DELIVERED:
                counts.delivered += 1
            else:
                counts.other += 1

        receiver.on_message(on_message)
        sender.on_status(on_status)
        senders.append(sender)
        receivers.append(receiver)
    for c in [*receivers, *senders]:
        await c.start()
    async with asyncio.timeout(60):
        for c in [*receivers, *senders]:
            await c.wait_online()
    emit({"event": "ready", "connections": len(senders) + len(receivers)})

    t0 = await control.go()
    ns = 1_000_000_000
    t_begin = t0 + int(spec["warmup_s"] * ns)
    t_end = t_begin + int(spec["measure_s"] * ns)

    def snapshot() -> dict[str, float]:
        return {"t": time.monotonic_ns(), "cpu": cpu_seconds(), "written": 0,
                "received": counts.received, "sent": counts.sent,
                "delivered": counts.delivered, "other": counts.other}

    await sleep_until(t0)
    running = True
    for sender, (_, _, peer) in zip(senders, spec["pairs"], strict=True):
        for _ in range(window):
            sender.send(peer, payload)
    await sleep_until(t_begin)
    start = snapshot()
    samples = [start]
    while time.monotonic_ns() < t_end:
        await asyncio.sleep(0.01)
        samples.append(snapshot())
    running = False
    end = samples[-1]
    delta = {k: end[k] - start[k] for k in start}
    keys = ("written", "received", "sent", "delivered")
    emit({"event": "result", "seconds": delta["t"] / ns, "cpu_s": delta["cpu"],
          **{k: delta[k] for k in keys}, "failed_status": delta["other"],
          "rates": {k: slope(samples, k) for k in keys}, "latency_us": [], "closed": {}})
    await control.line()
    for c in [*senders, *receivers]:
        await c.close()
    emit({"event": "bye"})
