"""The SDK over every way in: native or WebSocket, each in clear or over TLS."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from appliance.sdk import Status
from tests.sdk.conftest import World

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("websocket", "tls"), [(False, False), (True, False), (False, True),
                                                (True, True)],
                         ids=["native", "websocket", "native+tls", "websocket+tls"])
def test_exchange_over(world: World, websocket: bool, tls: bool) -> None:
    context = None
    if tls:
        context = ssl.create_default_context(
            cafile=str(world.tmp / "data" / "tls" / "self-signed.crt"))

    async def main() -> None:
        async with world.client("alice", websocket=websocket, ssl=context) as alice, \
                world.client("bob") as bob:
            alice_in, bob_in = alice.messages(), bob.messages()
            async with asyncio.timeout(10):
                await alice.wait_online()
                await bob.wait_online()
                message = alice.send("bob", "hello")
                assert (await anext(bob_in)).text == "hello"
                await message.reached(Status.DELIVERED)
                bob.send("alice", "hello back")
                got = await anext(alice_in)
            assert (got.sender, got.text) == ("bob", "hello back")

    asyncio.run(main())  # the self-signed certificate names 127.0.0.1 as well
