"""A stub server for calibrating the connect benchmark: answers any HELLO with WELCOME.

No authentication, no store: what the load generator achieves against it is
the most the generator CPU can measure.  Started like `tidings serve`
(``... --data-dir D serve --port 0``; the arguments are ignored) and prints
the same "listening on HOST:PORT" line, so `ServerProcess` can run it.
"""

from __future__ import annotations

import asyncio
import signal
from typing import cast

from appliance.protocol.wire import Welcome, encode
from appliance.transport.loop import run

WELCOME = encode(Welcome(address=b"stub", server_time_ms=0, keepalive_s=60,
                         max_frame_bytes=65_536))


class StubProtocol(asyncio.Protocol):
    __slots__ = ("answered", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.answered and self.transport is not None:
            self.answered = True
            self.transport.write(WELCOME)


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StubProtocol, "127.0.0.1", 0, backlog=4096)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"stub listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    run(main())
