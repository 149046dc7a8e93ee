"""What a connection's protocol needs of the server that accepted it, and vice versa.

The protocol modules (wire, HTTP/1.1, HTTP/2, the carriers) depend on these
small interfaces, never on `Server`: `server.py` imports them, they import
nothing of it, so there is no import circle and each protocol can be driven
by any host that provides this much.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Protocol

from appliance.api.http import ApiRequest, ApiResponse
from appliance.config.limits import EngineLimits
from appliance.config.model import TransportConfig
from appliance.engine.clock import Clock
from appliance.engine.core import Engine
from appliance.protocol.sniff import Detected
from appliance.transport.bounds import ByteBudget


class Connection(Protocol):
    """What the deadline scan and the shutdown need of any connection."""

    def check_deadline(self, now: float) -> None:
        """Close the connection if one of its deadlines has passed at `now` (monotonic)."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Say goodbye (native `code`/`reason`; HTTP says it its own way) and close."""
        ...

    def finish(self) -> None:
        """The server stops: close once what has begun is answered (HTTP), at once
        with GOING_AWAY (native), or not yet (a TLS handshake, which then carries
        a request to answer)."""
        ...

    def finished(self) -> bool:
        """Closed or closing (its last bytes may still be on their way): the shutdown
        no longer waits for it."""
        ...


class Flushable(Protocol):
    """A connection whose output is coalesced per loop turn (the native hot path)."""

    def flush(self) -> None:
        """Send what was queued."""
        ...


class Api(Protocol):
    """The REST API as HTTP sees it."""

    async def handle(self, request: ApiRequest) -> ApiResponse:
        """Answer one request (never raises: errors are problem+json)."""
        ...

    def streams(self, method: str, path: str) -> bool:
        """Whether this request's body goes to its handler as it arrives (an upload):
        the handler is then called when the headers are in, with `ApiRequest.stream`."""
        ...


class Host(Protocol):
    """The server, as the protocols of its connections see it."""

    engine: Engine
    api: Api | None
    limits: EngineLimits
    bounds: TransportConfig
    clock: Clock
    #: Every connection the deadline scan watches.
    connections: set[Connection]
    #: The server stops (`Connection.finish`): answers close their connection.
    stopping: bool
    #: Refusals by reason (slow consumers, HTTP/2 floods, HTTP 408/429), for the operator.
    refusals: collections.Counter[str]
    #: Request bodies in flight, server-wide (HTTP/2 flow control).
    body_budget: ByteBudget

    def mark_dirty(self, conn: Flushable) -> None:
        """`conn` has queued output: flush it after this read, or this loop turn."""
        ...

    def hand_over(self, transport: asyncio.Transport, kind: Detected, first_bytes: bytes) -> None:
        """A connection turned out not to speak the native protocol: give it its handler."""
        ...

    def auth_result(self, transport: Any, ok: bool) -> None:
        """A HELLO on `transport` passed or failed (the edge counts failures per address)."""
        ...
