"""The honest pair's own process (`tests.support.hostile.HonestPair`).

    python -m tests.support.honest_child HOST PORT USER_A TOKEN_A USER_B TOKEN_B INTERVAL_S

Prints ``ready`` once both users are connected, exchanges a reliable message
every INTERVAL_S until its stdin closes, printing each round as it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

from appliance.protocol.wire import Message, Status, StatusReport
from tests.support.client import Client


class Rounds:
    """Round trips from `sender` to `receiver` until `stop` is set, each reported on
    stdout as it ends (the attack tests read the count while they attack):
    ``sent``, then ``ok SECONDS`` or ``wrong SECONDS WHAT``; ``failed WHAT`` ends them."""

    def __init__(self, sender: Client, receiver: Client, peer: bytes, interval_s: float) -> None:
        self.sender, self.receiver, self.peer = sender, receiver, peer
        self.interval_s = interval_s
        self.stop = asyncio.Event()

    async def run(self) -> None:
        next_id = 1
        while not self.stop.is_set():
            started = time.perf_counter()
            self.sender.send(Message(id=next_id, peer=self.peer, payload=b"honest"))
            print("sent", flush=True)
            try:
                status = await self._sent(next_id)
                got = await self.receiver.message(timeout=5)
            except (TimeoutError, AssertionError, ConnectionError) as exc:
                print(f"failed message {next_id}: {exc!r}".replace("\n", " "), flush=True)
                return
            latency = time.perf_counter() - started
            if status.status != Status.SENT:
                print(f"wrong {latency} message {next_id}: {status!r}", flush=True)
            elif got.id != next_id:
                print(f"wrong {latency} expected message {next_id}, got {got!r}", flush=True)
            else:
                print(f"ok {latency}", flush=True)
            next_id += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.interval_s)

    async def _sent(self, message_id: int) -> StatusReport:
        """The sender's answer for `message_id`; stored reports on the way are confirmed."""
        while True:
            status = await self.sender.status(timeout=5)
            if status.report_seq:
                self.sender.report_ack(status.report_seq)
            if status.id == message_id and not status.report_seq:
                return status


async def main(host: str, port: int, a: str, token_a: str, b: str, token_b: str,
               interval_s: float) -> None:
    sender = await Client.connect(host, port, token_a, "honest-dev")
    receiver = await Client.connect(host, port, token_b, "honest-dev")
    rounds = Rounds(sender, receiver, b.encode(), interval_s)
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), rounds.stop.set)  # readable at EOF: stop
    print("ready", flush=True)
    await rounds.run()
    await rounds.stop.wait()
    loop.remove_reader(sys.stdin.fileno())
    await sender.close()
    await receiver.close()


if __name__ == "__main__":
    host, port, a, token_a, b, token_b, interval = sys.argv[1:8]
    asyncio.run(main(host, int(port), a, token_a, b, token_b, float(interval)))
