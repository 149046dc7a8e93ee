"""A client process for the restart tests: `python -m tests.sdk.outbox_child SPEC.json`.

Modes: ``queue`` sends `count` messages with no server to reach, prints
"queued" once they are in the local outbox, then waits to be killed;
``stream`` sends `count` messages, prints "stored" once they are in the
outbox, then "sent N" as SENT statuses arrive (the test kills it midway);
``drain`` reconnects, waits for everything in the outbox to be answered,
prints "drained" and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys

from appliance.sdk import Backoff, Client, Status


async def main(spec: dict[str, object]) -> None:
    client = Client(str(spec["host"]), int(spec["port"]), str(spec["token"]),  # type: ignore[call-overload]
                    store=str(spec["store"]), backoff=Backoff(0.05, 0.3))
    mode, count, prefix = spec["mode"], int(spec.get("count", 0)), spec.get("prefix", "")  # type: ignore[call-overload]
    async with client:
        if mode == "queue":
            for i in range(count):
                client.send("bob", f"{prefix}{i}")
            await asyncio.sleep(0)  # the send()s commit at the end of this loop turn
            assert len(client.outbox()) >= count
            print("queued", flush=True)
            await asyncio.Event().wait()
        elif mode == "stream":
            sent = 0

            def on_status(update: object) -> None:
                nonlocal sent
                if getattr(update, "status", None) == Status.SENT:
                    sent += 1
                    print(f"sent {sent}", flush=True)

            client.on_status(on_status)
            for i in range(count):
                client.send("bob", f"{prefix}{i}")
            await asyncio.sleep(0)  # the send()s commit at the end of this loop turn
            print("stored", flush=True)
            await asyncio.Event().wait()
        else:
            await client.wait_online()
            for message in client.outbox():
                await message.sent()
            print("drained", flush=True)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        asyncio.run(main(json.load(f)))
