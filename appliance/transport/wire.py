"""One native-protocol connection: asyncio Protocol <-> codec <-> engine.

The Protocol API with no task per connection and `__slots__` is what keeps an
idle connection near 1.3 KB of Python memory on uvloop (performance.md §2.3);
a task per connection costs ~3.5 KB more.

Writes are coalesced per connection per loop turn: uvloop sends at once when
its buffer is empty, so without this every 165-byte frame would cost its own
send() (~7 us on loopback) and the receiver a wakeup; with it, all the frames
one loop turn produces for a connection leave in one syscall.

Bounded memory for a peer that does not read (issue 12): past the transport's
high-water mark (`pause_writing`) the peer is no longer read from, so it gets
no further answers (PONGs, statuses); past `max_output_bytes`, or when its
output stays backed up for `send_timeout_s`, it is closed with SLOW_CONSUMER.
The buffer size is looked at only in `flush()` and only while writing is
paused: one attribute test per flush on the hot path.
"""

from __future__ import annotations

import asyncio
import logging

from appliance.engine.ports import FrameLink
from appliance.engine.session import Session
from appliance.errors import AuthError, StorageError
from appliance.protocol.sniff import Detected, detect
from appliance.protocol.wire import (
    Ack,
    Close,
    CloseCode,
    Hello,
    Message,
    Ping,
    Pong,
    ReadReport,
    RemoteWireError,
    ReportAck,
    Role,
    State,
    Welcome,
    WireConnection,
    encode,
)
from appliance.transport.bounds import (
    HELD_BY_OUTPUT,
    HELD_BY_PROTOCOL,
    close_within,
    hold,
    release,
    set_write_limits,
)
from appliance.transport.host import Host
from appliance.transport.tasks import spawn

log = logging.getLogger(__name__)

#: Frames queued for one connection that are sent without waiting for the turn's end.
_FLUSH_FRAMES = 256


class WireProtocol(FrameLink, asyncio.Protocol):
    """Drives one connection; implements the engine's `Link` port."""

    __slots__ = ("_codec", "_held", "_out", "_server", "_sniff", "_stalled_at", "_transport",
                 "hello_seen", "last_seen", "opened_at", "session")

    def __init__(self, server: Host) -> None:
        self._server = server
        self._codec = WireConnection(Role.SERVER, max_frame_bytes=server.limits.max_frame_bytes)
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] | None = None
        self.session: Session | None = None
        #: The first bytes while the protocol is not yet known; None once it is.
        self._sniff: bytes | None = b""
        self.hello_seen = False
        self.opened_at = self.last_seen = server.clock.monotonic()
        self._held = 0
        #: When the output went above the high-water mark; 0.0 while it flows.
        self._stalled_at = 0.0

    @property
    def over_websocket(self) -> bool:
        """True when this connection came as a WebSocket (its transport is the carrier)."""
        return bool(getattr(self._transport, "is_websocket", False))

    # --- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a TCP transport
        set_write_limits(transport, self._server.bounds.output_high_water_bytes)
        self._server.connections.add(self)

    def pause_writing(self) -> None:
        """The peer is not reading: read nothing more from it (so answer nothing more)."""
        self._stalled_at = self._server.clock.monotonic()
        self._hold(HELD_BY_OUTPUT)

    def resume_writing(self) -> None:
        self._stalled_at = 0.0
        self._release(HELD_BY_OUTPUT)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None
        if self.session is not None:
            self._server.engine.close_session(self.session)

    def data_received(self, data: bytes) -> None:
        self.last_seen = self._server.clock.monotonic()
        if self._sniff is not None:
            # The port is shared (SPEC M12): decide once, from the first bytes.
            data = self._sniff + data
            detected = detect(data)
            if detected is None:
                self._sniff = data
                return
            self._sniff = None
            if detected is not Detected.NATIVE and detected is not Detected.UNKNOWN:
                transport, self._transport = self._transport, None
                self._server.connections.discard(self)
                if transport is not None:
                    self._server.hand_over(transport, detected, data)
                return
            # NATIVE, or garbage: the codec checks the preface and says why not.
        try:
            events = self._codec.receive_data(data)
        except RemoteWireError as exc:
            self.close(exc.close_code, exc.reason)
            return
        session = self.session
        engine = self._server.engine
        for event in events:
            kind = type(event)
            if kind is Message:
                engine.on_message(session, event)  # type: ignore[arg-type]  # OPEN => session
            elif kind is Ack:
                engine.on_ack(session, event)  # type: ignore[arg-type]
            elif kind is ReportAck:
                engine.on_report_ack(session, event)  # type: ignore[arg-type]
            elif kind is ReadReport:
                engine.on_read(session, event)  # type: ignore[arg-type]
            elif kind is Ping:
                self.write(encode(Pong(event.nonce)))  # type: ignore[union-attr]
            elif kind is Hello:
                self.hello_seen = True  # the handshake timeout no longer applies
                self.opened_at = 0.0  # a shared float: 24 bytes less per idle connection
                spawn(self._authenticate(event), name="hello")  # type: ignore[arg-type]
            elif kind is Close:
                self.flush()
                self._close_transport()
                return
            elif kind is not Pong:  # an extension frame (PROTOCOL.md §8): OPEN => session
                engine.on_extension(session, event)  # type: ignore[arg-type]

    def eof_received(self) -> bool | None:
        return None  # close our side too

    # --- hello ---------------------------------------------------------------

    async def _authenticate(self, hello: Hello) -> None:
        if self._server.stopping:  # connected during the shutdown's grace
            self.close(CloseCode.GOING_AWAY, "server shutting down")
            return
        try:
            self.session = await self._server.engine.open_session(self, hello)
        except AuthError as exc:
            self._server.auth_result(self._transport, ok=False)  # the edge counts failures
            self.close(exc.close_code, str(exc))
        except StorageError as exc:
            log.error("hello failed: %s", exc)
            self.close(CloseCode.INTERNAL_ERROR, "store unavailable, try again")
        else:
            self._server.auth_result(self._transport, ok=True)

    @property
    def open(self) -> bool:
        """See `Link.open`: False once the connection is gone."""
        return self._transport is not None

    # --- the engine's Link port ------------------------------------------------

    def write(self, data: bytes) -> None:
        """See `Link.write`: queued, sent with the others of this read or loop turn."""
        out = self._out
        if out is None:
            self._out = [data]
            self._server.mark_dirty(self)
        else:
            out.append(data)
            if len(out) >= _FLUSH_FRAMES:
                # A loop turn can carry megabytes of input; holding all output
                # until the turn ends would stall this receiver (100+ ms gaps
                # were seen under load).  Flushing after each read instead
                # cost 20% of transient throughput, so: by count.
                self.flush()

    def flush(self) -> None:
        """Send what `write` queued, in one syscall."""
        out = self._out
        if out is None:
            return
        self._out = None
        transport = self._transport
        if transport is not None:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            if self._stalled_at and (transport.get_write_buffer_size()
                                     > self._server.bounds.max_output_bytes):
                self._slow_consumer(f"more than {self._server.bounds.max_output_bytes} bytes"
                                    " unread")

    def _slow_consumer(self, why: str) -> None:
        # Closing loses nothing a client relies on: reliable messages stay
        # stored until ACKed and are sent again on reconnect; real-time ones
        # were never promised to a device that is not reading.
        if self._transport is None:
            return  # already closing: the grace period runs, nothing more to decide
        self._stalled_at = 0.0  # once: close() flushes, and the scan runs until it is gone
        log.info("closing a slow consumer: %s", why)
        self._server.refusals["slow_consumer"] += 1
        self.close(CloseCode.SLOW_CONSUMER, f"slow consumer: {why}")

    def check_deadline(self, now: float) -> None:
        """The deadline scan: HELLO in time, then keepalive, and output that moves."""
        bounds = self._server.bounds
        if self._stalled_at and now - self._stalled_at > bounds.send_timeout_s:
            self._slow_consumer(f"output not read for {bounds.send_timeout_s} s")
        elif self.session is None:
            if not self.hello_seen and now - self.opened_at > bounds.handshake_timeout_s:
                self.close(CloseCode.IDLE_TIMEOUT, "no HELLO within the handshake timeout")
        elif now - self.last_seen > 2 * self._server.limits.keepalive_s:
            self.close(CloseCode.IDLE_TIMEOUT,
                       f"nothing received for {2 * self._server.limits.keepalive_s} s")

    def welcome(self, welcome: Welcome) -> None:
        """See `Link.welcome`."""
        if self._transport is not None:
            self.write(self._codec.send(welcome))

    def finish(self) -> None:
        """See `Connection.finish`: the client reconnects (to the next server)."""
        self.close(CloseCode.GOING_AWAY, "server shutting down")

    def finished(self) -> bool:
        """See `Connection.finished`."""
        return self._transport is None

    def close(self, code: int, reason: str) -> None:
        """See `Link.close`."""
        self.flush()
        transport = self._transport
        if transport is None:
            return
        if self._codec.state not in (State.CLOSED, State.ERROR, State.AWAIT_PREFACE):
            transport.write(self._codec.send(Close(code, reason[:200])))
        elif self._codec.state in (State.ERROR, State.AWAIT_PREFACE):
            transport.write(encode(Close(code, reason[:200])))
        self._close_transport()

    def pause_reading(self) -> None:
        """See `Link.pause_reading`."""
        self._hold(HELD_BY_PROTOCOL)

    def resume_reading(self) -> None:
        """See `Link.resume_reading`."""
        self._release(HELD_BY_PROTOCOL)

    def _hold(self, reason: int) -> None:
        self._held = hold(self._transport, self._held, reason)

    def _release(self, reason: int) -> None:
        self._held = release(self._transport, self._held, reason)

    def _close_transport(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            close_within(transport)  # what is buffered gets a grace period, not forever

    @property
    def authenticated(self) -> bool:
        """True once WELCOME was sent."""
        return self.session is not None
