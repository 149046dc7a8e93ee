"""`tidings serve`: one line with the address, and a clean drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from appliance.protocol.wire import CloseCode, Message, Status, StatusReport
from tests.support.client import Client, ServerClosedError
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


def test_sigterm_commits_queued_messages_says_going_away_and_exits_zero(tmp_path: Path) -> None:
    data = tmp_path / "data"
    tokens, _ = provision(data, ["alice", "bob"])
    server = ServerProcess(data)
    server.start()
    assert server.host == "127.0.0.1"
    assert f"listening on 127.0.0.1:{server.port}" in server.output

    async def go() -> None:
        alice = await Client.connect(server.host, server.port, tokens["alice"], "a")
        for i in range(1, 201):
            alice.send(Message(i, b"bob", b"x"))
        await alice.writer.drain()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        statuses: list[StatusReport] = []

        async def collect() -> None:
            while True:
                statuses.append(await alice.status())

        with pytest.raises(ServerClosedError) as info:
            await collect()
        assert info.value.code == CloseCode.GOING_AWAY
        assert {s.status for s in statuses} == {Status.SENT}
        assert len(statuses) == 200, "the drain commits and confirms what was queued"
        await alice.close()
        return_code = await asyncio.to_thread(server.wait, 20)
        assert return_code == 0
        # Every message that heard SENT is stored: bob gets each after a restart.
        server.start()
        bob = await Client.connect(server.host, server.port, tokens["bob"], "b")
        got = {(await bob.message()).id for _ in statuses}
        assert got == {s.id for s in statuses}
        await bob.close()

    try:
        asyncio.run(go())
    finally:
        assert server.stop() == 0
