"""What the preview tests share: an injectable resolver, a test policy, configs."""

from __future__ import annotations

import dataclasses
from ipaddress import ip_address
from typing import Any

from appliance.errors import PreviewFetchError
from appliance.media.config import PreviewConfig
from appliance.media.previews.address import AddressPolicy, IPAddress

#: The test servers listen on 127.0.0.1: this policy calls that one address
#: public (and nothing else of 127/8), as the issue asks.
LOOPBACK_IS_PUBLIC = ("127.0.0.1/32",)


class FakeResolver:
    """Answers from a table; `answers[host]` is a list of successive answers (the last repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append((host, port))  # as asked: absolute names end with "."
        name = host.removesuffix(".")
        series = self.answers.get(name)
        if not series:
            raise PreviewFetchError(f"{name} does not resolve")
        asked = sum(1 for h, _ in self.calls if h.removesuffix(".") == name)
        return [ip_address(a) for a in series[min(asked, len(series)) - 1]]
