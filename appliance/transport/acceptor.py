"""The one acceptor: accept -> IP filter -> limits -> (PROXY header) -> protocol detection.

Every TCP connection of the server's port starts as a `Gate`.  In
`connection_made`, before a byte is read, the filter and the limits
(`appliance.edge`) decide; a refused connection is aborted at once (RST, no
buffers, nothing read) and counted.  An admitted one waits for a trusted
proxy's PROXY header (then the filter and limits decide again, on the
client's address), then for the bytes that say which protocol it speaks
(`appliance.protocol.sniff`), and gets its protocol object from the server.

The gate stays the transport's protocol and forwards to that object: it is
the one place that learns when the connection ends, so the per-address
counters are exact.  The forwarding costs one method call per read (not per
message), measured as noise next to the codec.  The WebSocket upgrade hands
its carrier to the gate (`Gate.adopt`), and the auth hooks find a connection's
gate through its transport (`gate_of`): no table keyed by address and port, so
an open connection costs the gate object and one set entry.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from appliance.edge.config import EdgeConfig
from appliance.edge.files import FilterFiles
from appliance.edge.ipfilter import Address, CidrSet, IpFilter, parse_address, parse_cidr
from appliance.edge.limits import Limits, Peer, Refusal
from appliance.engine.clock import Clock
from appliance.errors import ConfigError, UsageError
from appliance.protocol.proxy import ProxyHeaderError, parse, starts_like_a_header
from appliance.protocol.sniff import Detected, detect
from appliance.protocol.wire import CloseCode
from appliance.transport.carrier import Carrier
from appliance.transport.tasks import spawn

log = logging.getLogger(__name__)

#: A handshake younger than this is never evicted: an honest one takes milliseconds on a
#: LAN, a few round trips on a mobile link.  An attacker must then open more than
#: max_handshakes / MIN_HANDSHAKE_AGE_S connections a second to keep logins out.
MIN_HANDSHAKE_AGE_S = 0.25

ProtocolFor = Callable[[Detected, asyncio.Transport], asyncio.Protocol | None]


def gate_of(transport: Any) -> Gate | None:
    """The gate of the TCP connection under `transport` (through TLS and WebSocket
    carriers), while it is open."""
    while isinstance(transport, Carrier):
        transport = transport.tcp
    protocol = None if transport is None else transport.get_protocol()
    return protocol if isinstance(protocol, Gate) else None


class _Closable(Protocol):
    def close(self, code: int, reason: str) -> None: ...


def nofile_limit() -> int:
    """The soft RLIMIT_NOFILE: every connection costs one descriptor."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def build_filter(config: EdgeConfig, files: FilterFiles) -> IpFilter:
    """The filter from the config lists and the files (slow with big files: off the loop).

    Raises:
        ConfigError: a file holds a line that is not a CIDR (key ``edge.block_file``...).
    """
    lists = {}
    for name in ("allow", "block"):
        try:
            lists[name] = files.read(name)
        except UsageError as exc:
            raise ConfigError(str(exc), key_path=f"edge.{name}_file") from None
    return IpFilter.of([*(parse_cidr(c) for c in config.allow), *lists["allow"]],
                       [*(parse_cidr(c) for c in config.block), *lists["block"]])


#: The most one read takes from a socket before the peer has authenticated.
#: Every such connection reads into one shared buffer (reads happen one at a
#: time on the loop), so what a stranger can make the server hold beyond its
#: protocol's own bounds is one read: with the event loop's default (256 KiB),
#: 240 strangers holding HTTP/1.1 bodies took +74 MiB after the body budget was
#: spent; +46 MiB with 64 KiB (issue 12).  Authenticated connections read up to
#: 256 KiB, as before: with small reads a flood from an authenticated peer that
#: never reads cost an honest client ~60 ms at p99 now and then.
READ_CHUNK_BYTES = 64 * 1024
_READ_BUFFER = memoryview(bytearray(READ_CHUNK_BYTES))
_AUTHENTICATED_READ_BUFFER = memoryview(bytearray(256 * 1024))


class Gate(asyncio.BufferedProtocol):
    """One accepted connection, from accept until its protocol is known, then its forwarder."""

    __slots__ = ("_buffer", "_client", "_edge", "_proxied", "handshaking", "inner", "peer",
                 "transport")

    def __init__(self, edge: Edge) -> None:
        self._edge = edge
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        #: The client's address when a PROXY header gave it (else: the socket's peer,
        #: looked up when needed: one object less per open connection).
        self._client: Address | None = None
        self.handshaking = True
        #: Bytes read before the protocol is known (bounded: see `data_received`).
        self._buffer = b""
        #: True while a trusted proxy's header is awaited.
        self._proxied = False

    # --- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]  # a TCP transport
        edge = self._edge
        peername = tcp.get_extra_info("peername")
        try:
            address = parse_address(peername[0])
        except (UsageError, TypeError, IndexError):
            tcp.abort()  # not an IP peer: nothing to decide on
            return
        if edge.trusted.contains(address):
            if not edge.limits.admit_proxy(edge.evict_handshake):
                tcp.abort()
                return
            self._proxied = True
        elif not self._admit(address):
            tcp.abort()  # refused before a byte is read: RST, no buffers
            return
        self.transport = tcp
        edge.gates.add(self)
        edge.pending.add(self)
        edge.handshaking[self] = edge.clock.monotonic()  # the handshake's start

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_BUFFER if self.handshaking else _AUTHENTICATED_READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        # Called right after `get_buffer`, in the same read: the same buffer.
        buffer = _READ_BUFFER if self.handshaking else _AUTHENTICATED_READ_BUFFER
        self.data_received(bytes(buffer[:nbytes]))

    def data_received(self, data: bytes) -> None:
        inner = self.inner
        if inner is not None:  # the hot path: one call
            inner.data_received(data)
            return
        if self.transport is None:
            return
        data = self._buffer + data if self._buffer else data
        if self._proxied:
            data = self._read_proxy_header(data)
            if not data:
                return
        detected = detect(data)
        if detected is None:
            self._buffer = data  # at most sniff.MAX_METHOD + 1 bytes
            return
        self._buffer = b""
        if starts_like_a_header(data[:12]) and (data.startswith(b"PROXY ") or data[0] == 0x0D):
            # A PROXY header from a peer we do not trust: it could claim any address.
            self._refuse(Refusal.PROXY, "PROXY protocol header from an untrusted address")
            return
        self._edge.pending.discard(self)
        protocol = self._protocol_for(detected, self.transport)
        if protocol is None:
            self.transport.close()
            return
        self.inner = protocol
        protocol.data_received(data)

    def _protocol_for(self, detected: Detected, transport: asyncio.Transport
                      ) -> asyncio.Protocol | None:
        return self._edge.protocol_for(detected, transport)

    def adopt(self, protocol: asyncio.Protocol) -> None:
        """The protocol inside changes (HTTP/1.1 upgraded to a WebSocket carrier)."""
        self.inner = protocol

    def _read_proxy_header(self, data: bytes) -> bytes:
        """Consume the header; returns the bytes after it (b"" while incomplete or refused)."""
        try:
            parsed = parse(data)
        except ProxyHeaderError as exc:
            self._refuse(Refusal.PROXY, exc.reason)
            return b""
        if parsed is None:
            self._buffer = data  # bounded by proxy.MAX_V2_BYTES: parse refuses beyond
            return b""
        header, size = parsed
        edge = self._edge
        edge.limits.release_proxy()
        self._proxied = False
        if header.source is not None:
            try:
                self._client = parse_address(header.source)
            except UsageError:
                self._refuse(Refusal.PROXY, "PROXY header with an unusable address")
                return b""
        address = self.address
        if address is None or not self._admit(address):
            self._abort()
            return b""
        self._buffer = b""
        return data[size:] or b""

    @property
    def address(self) -> Address | None:
        """The client's address: from the PROXY header, else the socket's peer."""
        if self._client is not None:
            return self._client
        transport = self.transport
        if transport is None:
            return None
        try:
            return parse_address(transport.get_extra_info("peername")[0])
        except (UsageError, TypeError, IndexError):
            return None

    def permitted_by(self, new_filter: IpFilter, address: Address) -> bool:
        """Whether a reloaded filter keeps this connection from `address` (`Edge.reload`)."""
        return new_filter.permits(address)

    def _admit(self, address: Address, *, allow_list: bool = True) -> bool:
        edge = self._edge
        verdict = edge.limits.admit(address, edge.clock.monotonic(), edge.evict_handshake,
                                    allow_list=allow_list)
        if isinstance(verdict, Refusal):
            self.peer = None
            return False
        self.peer = verdict
        return True

    def eof_received(self) -> bool | None:
        inner = self.inner
        return None if inner is None else inner.eof_received()

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.connection_lost(exc)

    # --- the edge's handles --------------------------------------------------------------

    def release(self) -> None:
        """Give back what `connection_made` counted; idempotent."""
        edge = self._edge
        if self.transport is None:
            return
        self.transport = None
        edge.pending.discard(self)
        edge.handshaking.pop(self, None)
        edge.gates.discard(self)
        if self._proxied:
            self._proxied = False
            edge.limits.release_proxy()
        elif self.peer is not None:
            edge.limits.closed(self.peer, self.handshaking)
            self.peer = None

    def authenticated(self) -> None:
        if self.handshaking and self.peer is not None:
            self.handshaking = False
            self._edge.handshaking.pop(self, None)
            self._edge.limits.authenticated(self.peer)

    def close(self, code: int, reason: str) -> None:
        """Close with a reason where the protocol has a way to say one."""
        target: Any = self.inner
        while getattr(target, "inner", None) is not None:
            target = target.inner  # TLS and WebSocket carriers: the protocol inside speaks
        try:
            closable: _Closable = target
            closable.close(code, reason)
        except (AttributeError, TypeError):  # no protocol yet, or one with no reasons
            if self.transport is not None:
                self.transport.close()

    def _refuse(self, reason: Refusal, detail: str) -> None:
        self._edge.limits.refused(reason)
        log.info("edge: refused %s: %s", self.address or "a peer", detail)
        self._abort()

    def _abort(self) -> None:
        transport = self.transport
        self.release()
        if transport is not None:
            transport.abort()


class RedirectGate(Gate):
    """A gate of the plain-HTTP redirect listener (port 80): the same filter, limits
    and deadlines as the main port's (its connections count against the same caps,
    so a flood there cannot spend the descriptors the main port needs); behind it,
    HTTP/1.1 only.

    But for the allow list while ACME answers HTTP-01 challenges there: the CA
    validates from addresses no operator can list (RFC 8555 §10.2 even asks it to
    vary them), so an allow list that kept them out failed every order and renewal.
    A stranger to the allow list gets the challenge answers alone (403 for anything
    else); the block list, the caps and the deadlines hold for everyone.
    """

    __slots__ = ("_stranger",)

    def __init__(self, edge: Edge) -> None:
        super().__init__(edge)
        #: Outside a non-empty allow list, admitted for the challenge answers alone.
        self._stranger = False

    def _admit(self, address: Address, *, allow_list: bool = True) -> bool:
        edge = self._edge
        self._stranger = edge.redirect_answers_acme and not edge.limits.filter.permits(address)
        return super()._admit(address, allow_list=allow_list and not self._stranger)

    def permitted_by(self, new_filter: IpFilter, address: Address) -> bool:
        """A stranger admitted for the challenge answers stays unless now blocked: a
        reload closed it, cutting a CA validation in progress."""
        if self._stranger:
            return not new_filter.block.contains(address)
        return super().permitted_by(new_filter, address)

    def _protocol_for(self, detected: Detected, transport: asyncio.Transport
                      ) -> asyncio.Protocol | None:
        make = self._edge.redirect_for
        if detected is not Detected.HTTP1 or make is None:
            return None  # TLS, HTTP/2 or the native protocol on port 80: closed
        protocol = make(self._stranger)
        protocol.connection_made(transport)
        return protocol


class Edge:
    """The server's edge: the filter, the limits, and the gates of open connections."""

    def __init__(self, config: EdgeConfig, data_dir: Path, clock: Clock,
                 protocol_for: ProtocolFor, handshake_timeout_s: float) -> None:
        self.clock = clock
        self.protocol_for = protocol_for
        self.handshake_timeout_s = handshake_timeout_s
        self.data_dir = data_dir
        self.files = FilterFiles.of(config, data_dir)
        self.config = config
        self.trusted = CidrSet(parse_cidr(c) for c in config.trusted_proxies)
        self.limits = Limits(config, build_filter(config, self.files), nofile_limit())
        self._stamp = self.files.stamp()
        self._reloading = False
        #: Every open connection's gate (a reload closes the newly refused ones).
        self.gates: set[Gate] = set()
        #: Gates whose protocol is not known yet (the sweep enforces their deadline).
        self.pending: set[Gate] = set()
        #: Gates not yet authenticated -> when they opened, oldest first (the cap evicts).
        self.handshaking: dict[Gate, float] = {}
        self.evicted = 0
        #: Makes the redirect listener's protocol (`Server.start_redirect` sets it).
        #: Its argument: answer ACME challenges alone (`RedirectGate`).
        self.redirect_for: Callable[[bool], asyncio.Protocol] | None = None
        #: The redirect listener answers ACME's HTTP-01 challenges (`RedirectGate`).
        self.redirect_answers_acme = False

    def gate(self) -> Gate:
        """The protocol factory for the listening socket."""
        return Gate(self)

    def redirect_gate(self) -> Gate:
        """The protocol factory for the redirect listener's socket."""
        return RedirectGate(self)

    # --- hooks -------------------------------------------------------------------------------

    def auth_result(self, transport: Any, ok: bool) -> None:
        """A HELLO or an authenticated request on `transport` succeeded or failed."""
        if transport is None:
            return
        gate = gate_of(transport)
        if gate is None:
            return
        if ok:
            gate.authenticated()
        elif (address := gate.address) is not None and self.limits.auth_failed(
                address, self.clock.monotonic()):
            # Blocked: its open connections go too, or one keep-alive connection
            # could go on guessing at the request rate (rare: a scan is fine).
            # After this turn, so that the failure being answered is answered;
            # no reason, which HTTP/1.1 would turn into a 408 of its own.
            for other in [g for g in self.gates if g.address == address]:
                asyncio.get_running_loop().call_soon(other.close, CloseCode.AUTH_FAILED, "")

    def snapshot(self) -> dict[str, int]:
        """Counters for the operator's statistics (`/v1/stats` operator figures)."""
        return {**self.limits.snapshot(), "evicted_handshakes": self.evicted}

    def evict_handshake(self) -> bool:
        """At the global handshake cap, make room by closing the oldest handshake.

        Refusing newcomers instead would let an attacker with many addresses (each
        under its per-address caps) lock every honest login out, since silent
        connections hold their slot for the whole handshake timeout while an honest
        handshake takes milliseconds: the oldest is almost always the attacker's.
        Only handshakes older than `MIN_HANDSHAKE_AGE_S` go, so a flood cannot churn
        out an honest one in progress.
        """
        oldest, opened_at = next(iter(self.handshaking.items()), (None, 0.0))
        if oldest is None or self.clock.monotonic() - opened_at < MIN_HANDSHAKE_AGE_S:
            return False
        self.evicted += 1
        oldest.close(CloseCode.IDLE_TIMEOUT, "handshake too slow: the server is busy")
        oldest.release()  # its slot is free now, whatever the close takes
        return True

    # --- once a second -------------------------------------------------------------------

    def sweep(self) -> None:
        """Deadlines before the protocol is known; expire per-address state; reload."""
        now = self.clock.monotonic()
        proxy_s, detect_s = self.config.proxy_header_timeout_s, self.handshake_timeout_s
        for gate in [g for g in self.pending
                     if now - self.handshaking.get(g, now) > (proxy_s if g._proxied
                                                               else detect_s)]:
            gate._abort()  # silent, or a proxy that never sent its header
        self.limits.expire(now)
        stamp = self.files.stamp()
        if stamp != self._stamp and not self._reloading:
            self._stamp = stamp
            spawn(self.reload(self.config), name="edge-reload")

    async def reload(self, config: EdgeConfig) -> None:
        """New settings and filter (SIGHUP, or a filter file changed); closes newly
        refused connections, keeps every allowed one.  A bad file keeps the old filter."""
        await self.try_reload(config)

    async def try_reload(self, config: EdgeConfig) -> bool:
        """`reload`, saying whether the new filter is in use (False: the old one is)."""
        self._reloading = True
        try:
            files = FilterFiles.of(config, self.data_dir)
            loop = asyncio.get_running_loop()
            try:
                new_filter = await loop.run_in_executor(None, build_filter, config, files)
            except ConfigError as exc:
                log.error("edge: IP filter not reloaded, keeping the previous one: %s", exc)
                return False
            self.files, self.config = files, config
            self._stamp = files.stamp()
            self.trusted = CidrSet(parse_cidr(c) for c in config.trusted_proxies)
            self.limits.configure(config, new_filter, nofile_limit())
            now = self.clock.monotonic()
            closed = 0
            for gate in list(self.gates):
                address = gate.address
                if address is not None and not gate._proxied and (
                        not gate.permitted_by(new_filter, address)
                        or self.limits.is_blocked(address, now)):
                    gate.close(CloseCode.GOING_AWAY, "address refused by the IP filter")
                    closed += 1
            log.info("edge: IP filter loaded: %d allowed, %d blocked CIDRs; %d connections"
                     " closed", len(new_filter.allow), len(new_filter.block), closed)
            return True
        finally:
            self._reloading = False

    def close_pending(self) -> None:
        """Shutdown: connections that have not said what they speak within the grace go."""
        for gate in list(self.pending):
            gate._abort()
