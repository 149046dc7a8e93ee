"""Open connections by protocol, and a connection's client address, for `/metrics`.

Counted when asked (a scrape), by walking the edge's gates: one type lookup
per open connection, nothing kept per connection, nothing on the data path.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable
from typing import Any

from appliance.edge.ipfilter import Address
from appliance.transport.acceptor import Gate, gate_of
from appliance.transport.http1 import HttpProtocol
from appliance.transport.http2 import Http2Protocol
from appliance.transport.redirect import RedirectProtocol
from appliance.transport.tls import TlsCarrier
from appliance.transport.websocket import WebSocketCarrier
from appliance.transport.wire import WireProtocol

#: The protocol object inside a gate (and TLS) -> its label.  Anything else, or
#: none yet: "detecting" (the first bytes or the TLS handshake are awaited).
_KINDS: dict[type[asyncio.BaseProtocol], str] = {
    WireProtocol: "native", WebSocketCarrier: "websocket", HttpProtocol: "http1",
    Http2Protocol: "http2", RedirectProtocol: "http1"}  # the redirect listener: HTTP/1.1


def by_protocol(gates: Iterable[Gate]) -> collections.Counter[tuple[str, bool]]:
    """(protocol, over TLS) -> open connections among `gates`."""
    counts: collections.Counter[tuple[str, bool]] = collections.Counter()
    for gate in gates:
        inner: Any = gate.inner
        tls = isinstance(inner, TlsCarrier)
        if tls:
            inner = inner.inner
        counts[_KINDS.get(type(inner), "detecting"), tls] += 1
    return counts


def client_address(transport: Any) -> Address | None:
    """The client's address for a request's transport (PROXY header aware); None once
    the connection is gone."""
    gate = gate_of(transport)
    return None if gate is None else gate.address
