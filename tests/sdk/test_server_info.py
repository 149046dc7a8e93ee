"""The SDK asks for WELCOME's extension fields and exposes them (PROTOCOL.md §3.2, §8)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.protocol.wire import Welcome, WelcomeField
from appliance.sdk import Client, Feature, ServerLimits
from appliance.sdk.server_info import server_info
from tests.support.provision import provision, write_config
from tests.support.server import ServerProcess

LIMITS = {"max_payload_bytes": 30_000, "max_expiry_s": 86_400, "window": 256, "max_devices": 5}


def welcome(info: dict[int, int] | None) -> Welcome:
    return Welcome(b"alice", 1, 30, 65_536, b"tidings/x", info)


def test_an_older_server_announces_nothing() -> None:
    # No WELCOME yet, or one without the fields (a server older than them).
    assert server_info(None) == (ServerLimits(), Feature(0))
    assert server_info(welcome(None)) == (ServerLimits(), Feature(0))
    assert server_info(welcome(None))[0].max_payload_bytes is None


def test_unknown_fields_and_feature_bits_are_kept_not_refused() -> None:
    limits, features = server_info(welcome({WelcomeField.WINDOW: 10, 200: 7,
                                            WelcomeField.FEATURES: Feature.PRESENCE | 1 << 20}))
    assert (limits.window, limits.max_devices) == (10, None)
    assert limits.fields[200] == 7
    assert Feature.PRESENCE in features
    assert Feature.GROUP_MANAGE not in features
    assert int(features) == Feature.PRESENCE | 1 << 20


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    data = tmp_path / "data"
    data.mkdir()
    tokens, _ = provision(data, ["alice"])
    config = write_config(tmp_path / "tidings.toml", **LIMITS)
    served = ServerProcess(data, env={"TIDINGS_CONFIG": str(config)})
    served.start()
    try:
        yield served, tokens["alice"]
    finally:
        assert served.stop() == 0


@pytest.mark.slow
def test_a_client_reads_the_configured_limits_from_a_real_server(  # it sets EXTENSIONS
        server: tuple[ServerProcess, str], tmp_path: Path) -> None:
    served, token = server

    async def main() -> None:
        client = Client(served.host, served.port, token, store=tmp_path / "alice.db")
        assert client.limits == ServerLimits()  # nothing before the first WELCOME
        async with client:
            async with asyncio.timeout(10):
                await client.wait_online()
            limits = client.limits
            assert (limits.max_payload_bytes, limits.max_expiry_s, limits.window,
                    limits.max_devices) == tuple(LIMITS.values())
            assert isinstance(client.server_features, Feature)
            assert int(client.server_features) == limits.fields[WelcomeField.FEATURES]

    asyncio.run(main())
