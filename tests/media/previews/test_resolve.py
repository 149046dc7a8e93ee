"""The system resolver: real lookups, bounded answers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from ipaddress import ip_address

import pytest

from appliance.errors import PreviewFetchError
from appliance.media.previews import resolve
from appliance.media.previews.resolve import SystemResolver


def test_localhost_resolves_through_the_system_resolver() -> None:
    addresses = asyncio.run(SystemResolver(5.0).resolve("localhost", 80))
    assert ip_address("127.0.0.1") in addresses or ip_address("::1") in addresses


def test_a_name_that_does_not_exist_is_a_fetch_error() -> None:
    with pytest.raises(PreviewFetchError, match="does not resolve"):
        asyncio.run(SystemResolver(5.0).resolve("no-such-host.invalid.", 80))


def test_answers_are_bounded() -> None:
    addresses = asyncio.run(SystemResolver(5.0, max_addresses=1).resolve("localhost", 80))
    assert len(addresses) == 1


def test_one_apps_silent_name_servers_leave_other_apps_their_lookups(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup cannot be cancelled: a name whose servers never answer holds its thread
    for the system resolver's own timeouts, long after the preview gave up.  Measured
    before the fix (this test's stand-in, timeout_s 0.2 s): 8 such lookups of one app
    took all 4 threads, and another app's lookup of a name that answers at once failed
    ("did not resolve within 0.2 s"); with the default 5 s, every app's previews were
    502 while one user kept it up.  Now an app's lookups hold at most 2 threads (more
    are refused at once) of 8, and the other app's lookup is answered at once."""
    released = threading.Event()

    def getaddrinfo(host: str, port: int, *args: object) -> list[tuple[object, ...]]:
        if host.endswith(".blackhole.example."):
            released.wait(10)  # the stand-in of a name server that never answers
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))]

    monkeypatch.setattr(resolve.socket, "getaddrinfo", getaddrinfo)

    async def go() -> None:
        resolver = SystemResolver(0.2)
        try:
            reasons = []
            for n in range(8):
                with pytest.raises(PreviewFetchError) as refused:
                    await resolver.resolve(f"x{n}.blackhole.example.", 443, owner=1)
                reasons.append(refused.value.reason)
            assert reasons[:2] == [f"x{n}.blackhole.example. did not resolve within 0.2 s"
                                   for n in range(2)]
            assert all("still wait on name servers" in r for r in reasons[2:]), reasons
            started = time.perf_counter()
            assert await resolver.resolve("honest.example.", 443, owner=2) == [
                ip_address("93.184.215.14")]
            assert time.perf_counter() - started < 0.1
            released.set()  # the name servers give up: the app's threads come back
            deadline = time.monotonic() + 2
            while not await _resolves(resolver, "again.example.", owner=1):
                assert time.monotonic() < deadline, "the app's threads never came back"
                await asyncio.sleep(0.01)
        finally:
            released.set()
            resolver.close()
    asyncio.run(go())


async def _resolves(resolver: SystemResolver, host: str, owner: int) -> bool:
    """Whether `host` resolves for `owner`; False while its lookups are refused."""
    try:
        await resolver.resolve(host, 443, owner=owner)
    except PreviewFetchError as exc:
        if "still wait" not in exc.reason:
            raise
        return False
    return True
