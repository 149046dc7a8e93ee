"""The system resolver: real lookups, bounded answers."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address

import pytest

from appliance.errors import PreviewFetchError
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
