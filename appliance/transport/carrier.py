"""The base of the TLS and WebSocket carriers: a protocol that carries another.

A carrier is the TCP transport's protocol and, at the same time, the
transport of the protocol inside it (`WireProtocol`, `Http2Protocol`): it
implements the few transport methods those use.  What every carrier shares
lives here: reading is paused while *either* the inner protocol asks for it
*or* the carrier's own output is backed up (a peer that does not read is
answered nothing more, RFC 6455 §5.5.3 lets a PONG go unsent), flow-control
signals reach the inner protocol, and closing never waits forever to flush.
"""

from __future__ import annotations

import asyncio
from typing import Any

from appliance.transport.bounds import HELD_BY_OUTPUT, HELD_BY_PROTOCOL, close_within, hold, release


class Carrier(asyncio.Protocol):
    """TCP below, `inner` above; subclasses frame `write` and unframe `data_received`."""

    __slots__ = ("_held", "_tcp", "inner")

    def __init__(self, tcp: asyncio.Transport) -> None:
        self._tcp: asyncio.Transport | None = tcp
        self._held = 0
        self.inner: asyncio.Protocol | None = None

    # --- the TCP transport's signals ------------------------------------------------------

    def pause_writing(self) -> None:
        self._hold(HELD_BY_OUTPUT)
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()
        self._release(HELD_BY_OUTPUT)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    @property
    def output_backed_up(self) -> bool:
        """True while the peer is not reading what we send (answer nothing more)."""
        return bool(self._held & HELD_BY_OUTPUT)

    def _hold(self, reason: int) -> None:
        self._held = hold(self._tcp, self._held, reason)

    def _release(self, reason: int) -> None:
        self._held = release(self._tcp, self._held, reason)

    def _write_tcp(self, data: bytes) -> None:
        tcp = self._tcp
        if tcp is not None and not tcp.is_closing():
            tcp.write(data)

    def _close_tcp(self) -> None:
        tcp, self._tcp = self._tcp, None
        if tcp is not None:
            close_within(tcp)

    # --- the transport the inner protocol sees ------------------------------------------------

    def abort(self) -> None:
        tcp, self._tcp = self._tcp, None
        if tcp is not None:
            tcp.abort()

    def is_closing(self) -> bool:
        return self._tcp is None or self._tcp.is_closing()

    def is_reading(self) -> bool:
        return self._tcp is not None and not self._held

    def pause_reading(self) -> None:
        self._hold(HELD_BY_PROTOCOL)

    def resume_reading(self) -> None:
        self._release(HELD_BY_PROTOCOL)

    def get_write_buffer_size(self) -> int:
        return 0 if self._tcp is None else self._tcp.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._tcp is not None:
            self._tcp.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return False  # a half-close would skip our own framing (close_notify, CLOSE)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.inner = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol | None:
        return self.inner

    @property
    def tcp(self) -> asyncio.Transport | None:
        """The transport underneath (TCP, or another carrier); None once closed."""
        return self._tcp

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default if self._tcp is None else self._tcp.get_extra_info(name, default)
