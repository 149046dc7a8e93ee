"""Load generator: a child process of the benchmark harness, pinned to its own CPU.

Usage: ``python -m tests.bench.loadgen SPEC.json`` (the harness writes the spec).

It talks to the harness with one line per message:

* stdout ``{"event": "ready", ...}`` once everything the spec needs before the
  start is in place (for ``pairs``: every connection authenticated);
* stdin ``go T0_NS``: start the load at CLOCK_MONOTONIC time T0 (``time.monotonic_ns``
  is one clock for every process of the machine, so all generators start together);
* stdout ``{"event": "result", ...}``: the figures of the measuring interval;
* stdin ``stop`` (or EOF, so an orphan never lingers): close everything and exit.

Efficiency matters more than elegance here: the generator must not be the
bottleneck.  Frames are encoded once per template and patched in place with
`struct.pack_into`; incoming frames are walked with a lean parser that reads
only the fields it needs (seq, status, timestamp); writes are batched; the
transport is an asyncio Protocol on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from appliance.protocol.wire import (
    PREFACE,
    Flag,
    FrameType,
    Hello,
    Message,
    Pong,
    Status,
    encode,
    encode_message,
)
from appliance.protocol.wire.frames import decode_body
from appliance.transport.loop import run

#: setsockopt(IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT): pick the source port at
#: connect() time, by 4-tuple, so thousands of sockets may share a source address.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

_HDR = struct.Struct(">IB")
_hdr = _HDR.unpack_from
_U64 = struct.Struct(">Q")
_u64 = _U64.unpack_from
_put_u64 = _U64.pack_into
_HDR_SIZE = _HDR.size

_MESSAGE = int(FrameType.MESSAGE)
_STATUS = int(FrameType.STATUS)
_WELCOME = int(FrameType.WELCOME)
_CLOSE = int(FrameType.CLOSE)
_PING = int(FrameType.PING)
_SENT = int(Status.SENT)
_DELIVERED = int(Status.DELIVERED)

# Offsets inside a whole frame (header included), PROTOCOL.md §4.
_ID_OFF = _HDR_SIZE  # MESSAGE: u64 id first
_SEQ_OFF = _HDR_SIZE + 16  # MESSAGE: id, refid, then seq
_ADDRLEN_OFF = _HDR_SIZE + 53  # MESSAGE: u8 address length ends the fixed part
_MSG_FIXED = 54  # MESSAGE: fixed part of the body
_STATUS_OFF = _HDR_SIZE + 8  # STATUS: u64 id, then u8 status
_RSEQ_OFF = _HDR_SIZE + 9  # STATUS: then u64 report_seq
_MAX_ACK = 65535  # ACK: u16 count

_NS = 1_000_000_000


def emit(obj: dict[str, Any]) -> None:
    """One line to the harness."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def hello_bytes(token: str, device: str) -> bytes:
    """Preface and HELLO, ready to write."""
    return PREFACE + encode(Hello(token=token.encode(), device_id=device.encode()))


def ack_frame(seqs: list[int]) -> bytes:
    """ACK frames for `seqs` (several if there are more than a u16 count)."""
    out = []
    for i in range(0, len(seqs), _MAX_ACK):
        chunk = seqs[i:i + _MAX_ACK]
        n = len(chunk)
        out.append(struct.pack(f">IBH{n}Q", 2 + 8 * n, int(FrameType.ACK), n, *chunk))
    return b"".join(out)


def report_ack_frame(report_seq: int) -> bytes:
    return struct.pack(">IBQ", 8, int(FrameType.REPORT_ACK), report_seq)


def cpu_seconds() -> float:
    """CPU time of this process (every thread)."""
    return time.process_time()


# --- connections ----------------------------------------------------------------


class Conn(asyncio.Protocol):
    """HELLO on connect; WELCOME completes `ready`; then frames go to `on_frames`."""

    def __init__(self, hello: bytes, ready: asyncio.Future[None]) -> None:
        self.hello = hello
        self.ready = ready
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.buf = b""
        self.closed_by: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop: not a registered subclass
        if self.hello:
            self.transport.write(self.hello)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.open = False
        if self.closed_by is None:
            self.closed_by = f"connection lost: {exc}" if exc else "connection lost (EOF)"
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(self.closed_by))

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.open:
            data = self._handshake(data)
            if not data:
                return
        pos = self.on_frames(data)
        if pos < len(data):
            self.buf = data[pos:]

    def _handshake(self, data: bytes) -> bytes:
        pos, end = 0, len(data)
        while end - pos >= _HDR_SIZE and not self.open:
            length, ftype = _hdr(data, pos)
            fend = pos + _HDR_SIZE + length
            if fend > end:
                break
            self.control(ftype, data[pos + _HDR_SIZE:fend])
            if ftype == _WELCOME:
                self.open = True
                if not self.ready.done():
                    self.ready.set_result(None)
            pos = fend
        rest = data[pos:]
        if not self.open:
            self.buf = rest
            return b""
        return rest

    def control(self, ftype: int, body: bytes) -> None:
        """A frame the hot path does not handle itself."""
        if ftype == _PING:
            self.write(encode(Pong(_u64(body, 0)[0])))
        elif ftype == _CLOSE:
            ev = decode_body(ftype, body)
            self.closed_by = f"CLOSE {ev.code} {ev.reason}"  # type: ignore[union-attr]
            if not self.ready.done():
                self.ready.set_exception(ConnectionError(self.closed_by))

    def on_frames(self, data: bytes) -> int:
        """Handle every complete frame in `data`; return where the incomplete rest starts."""
        pos, end = 0, len(data)
        while end - pos >= _HDR_SIZE:
            length, ftype = _hdr(data, pos)
            fend = pos + _HDR_SIZE + length
            if fend > end:
                break
            self.control(ftype, data[pos + _HDR_SIZE:fend])
            pos = fend
        return pos

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class WsShim(asyncio.Protocol):
    """A WebSocket layer under a `Conn`: the same native bytes in binary messages (/v1/ws).

    Client frames are masked with an all-zero key: legal on the wire (RFC 6455
    §5.3 wants it unpredictable, which no server can check) and free to apply,
    so the generator pays only for the framing, as a C client would.
    """

    UPGRADE = (b"GET /v1/ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tidings.v1\r\n\r\n")

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.tcp: asyncio.Transport | None = None
        self.upgraded = False
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tcp = cast(asyncio.Transport, transport)
        self.tcp.write(self.UPGRADE)

    def data_received(self, data: bytes) -> None:
        data = self.buf + data if self.buf else data
        self.buf = b""
        if not self.upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(f"WebSocket refused: {data[:40]!r}")
            self.upgraded = True
            data = data[end + 4:]
            self.conn.connection_made(self)  # type: ignore[arg-type]  # duck-typed transport
        pos, n = 0, len(data)
        payloads = []
        while n - pos >= 2:
            b1 = data[pos + 1] & 0x7F
            head = 2
            if b1 == 126:
                if n - pos < 4:
                    break
                b1, head = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
            elif b1 == 127:
                if n - pos < 10:
                    break
                b1, head = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
            if n - pos < head + b1:
                break
            if data[pos] & 0x0F == 0x2:  # binary; the server sends nothing else but close
                payloads.append(data[pos + head:pos + head + b1])
            pos += head + b1
        self.buf = data[pos:]
        if payloads:
            self.conn.data_received(b"".join(payloads))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.tcp is None:
            return
        n = len(data)
        if n < 126:
            head = bytes((0x82, 0x80 | n))
        elif n < 65536:
            head = bytes((0x82, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x82, 0x80 | 127)) + n.to_bytes(8, "big")
        self.tcp.write(head + b"\x00\x00\x00\x00" + bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return None if self.tcp is None else self.tcp.get_extra_info(name, default)

    def close(self) -> None:
        if self.tcp is not None:
            self.tcp.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.tcp = None
        self.conn.connection_lost(exc)


class Stats:
    """What every connection of this generator shares."""

    def __init__(self) -> None:
        self.recording = False
        self.latencies: list[int] = []  # ns, messages received while recording


class Receiver(Conn):
    """Counts messages; ACKs each seq (reliable); records latency from the payload."""

    def __init__(self, hello: bytes, ready: asyncio.Future[None], stats: Stats,
                 timed: bool) -> None:
        super().__init__(hello, ready)
        self.stats = stats
        self.timed = timed
        self.count = 0
        self.on_count: Callable[[], None] | None = None

    def on_frames(self, data: bytes) -> int:
        pos, end = 0, len(data)
        seqs: list[int] = []
        add = seqs.append
        n = 0
        lat = self.stats.latencies if self.timed and self.stats.recording else None
        now = time.monotonic_ns() if lat is not None else 0
        while end - pos >= _HDR_SIZE:
            length, ftype = _hdr(data, pos)
            fend = pos + _HDR_SIZE + length
            if fend > end:
                break
            if ftype == _MESSAGE:
                n += 1
                seq = _u64(data, pos + _SEQ_OFF)[0]
                if seq:
                    add(seq)
                if lat is not None:
                    ts_off = pos + _HDR_SIZE + _MSG_FIXED + data[pos + _ADDRLEN_OFF]
                    lat.append(now - _u64(data, ts_off)[0])
            else:
                self.control(ftype, data[pos + _HDR_SIZE:fend])
            pos = fend
        if seqs:
            self.write(ack_frame(seqs))
        if n:
            self.count += n
            if self.on_count is not None:
                self.on_count()
        return pos


class Sender(Conn):
    """Writes MESSAGE frames to one peer; counts SENT and DELIVERED; confirms reports.

    `template` is one encoded frame; a batch is that frame repeated with the
    id (reliable: 1, 2, 3, ...) and, when timed, the send time patched in.
    """

    def __init__(self, hello: bytes, ready: asyncio.Future[None], template: bytes,
                 payload_off: int, reliable: bool, window: int, min_batch: int) -> None:
        super().__init__(hello, ready)
        self.flen = len(template)
        self.block = template * window
        self.view = memoryview(self.block)
        self.payload_off = payload_off
        self.reliable = reliable
        self.window = window
        self.min_batch = min_batch
        self.next_id = 1
        self.written = 0
        self.sent = 0  # SENT statuses
        self.delivered = 0  # DELIVERED statuses
        self.other = 0  # any other status (failures)
        self.report_seq = 0
        self.report_acked = 0
        self.running = False
        self.receiver: Receiver | None = None  # flow control of transient mode

    # -- writing --

    def in_flight(self) -> int:
        if self.reliable:
            return self.written - self.sent - self.other
        assert self.receiver is not None
        return self.written - self.receiver.count

    def pump(self) -> None:
        """Closed loop: top the window up, in batches of at least `min_batch`."""
        if not self.running or self.transport is None:
            return
        room = self.window - self.in_flight()
        if room < self.min_batch:
            return
        if self.reliable:
            self.write_batch(room, 0)
        else:
            self.transport.write(self.view[:room * self.flen])
            self.written += room

    def write_batch(self, count: int, timestamp_ns: int) -> None:
        """Write `count` frames with fresh ids (reliable) and the timestamp (if non-zero)."""
        while count > self.window:
            self.write_batch(self.window, timestamp_ns)
            count -= self.window
        flen = self.flen
        buf = bytearray(self.view[:count * flen])
        if self.reliable:
            nid = self.next_id
            for off in range(_ID_OFF, count * flen, flen):
                _put_u64(buf, off, nid)
                nid += 1
            self.next_id = nid
        if timestamp_ns:
            for off in range(self.payload_off, count * flen, flen):
                _put_u64(buf, off, timestamp_ns)
        self.write(buf)
        self.written += count

    def confirm_reports(self) -> None:
        if self.report_seq > self.report_acked:
            self.report_acked = self.report_seq
            self.write(report_ack_frame(self.report_seq))

    # -- reading --

    def on_frames(self, data: bytes) -> int:
        pos, end = 0, len(data)
        sent = delivered = other = 0
        rseq = self.report_seq
        while end - pos >= _HDR_SIZE:
            length, ftype = _hdr(data, pos)
            fend = pos + _HDR_SIZE + length
            if fend > end:
                break
            if ftype == _STATUS:
                status = data[pos + _STATUS_OFF]
                if status == _SENT:
                    sent += 1
                elif status == _DELIVERED:
                    delivered += 1
                    r = _u64(data, pos + _RSEQ_OFF)[0]
                    if r > rseq:
                        rseq = r
                else:
                    other += 1
            else:
                self.control(ftype, data[pos + _HDR_SIZE:fend])
            pos = fend
        self.sent += sent
        self.delivered += delivered
        self.other += other
        self.report_seq = rseq
        if rseq - self.report_acked >= 256:
            self.confirm_reports()
        if sent or other:
            self.pump()
        return pos


class HelloConn(Conn):
    """An idle connection: HELLO, WELCOME, then nothing (answers PING).

    With `deferred`, the TCP connection opens silently and `send_hello`
    sends the HELLO later.
    """

    def __init__(self, hello: bytes, ready: asyncio.Future[None], deferred: bool = False) -> None:
        super().__init__(b"" if deferred else hello, ready)
        self.deferred_hello = hello if deferred else b""

    def send_hello(self) -> None:
        self.write(self.deferred_hello)


# --- control channel ------------------------------------------------------------


class Control:
    """Lines from the harness on stdin."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    @classmethod
    async def open(cls) -> Control:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        return cls(reader)

    async def line(self) -> str:
        """The next line; "stop" on EOF."""
        raw = await self.reader.readline()
        return raw.decode().strip() or "stop"

    async def go(self) -> int:
        """Wait for ``go T0``; return T0 (CLOCK_MONOTONIC ns)."""
        words = (await self.line()).split()
        if words[0] != "go":
            raise SystemExit(0)  # told to stop before starting
        return int(words[1])


async def sleep_until(t_ns: int) -> None:
    delay = (t_ns - time.monotonic_ns()) / _NS
    if delay > 0:
        await asyncio.sleep(delay)


def percentiles(samples: list[int]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max of `samples` (ns) in milliseconds."""
    if not samples:
        return {}
    s = sorted(samples)
    n = len(s)

    def at(q: float) -> float:
        return s[min(n - 1, int(q * n))] / 1e6

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "p999": at(0.999),
            "max": s[-1] / 1e6, "mean": sum(s) / n / 1e6}


def slope(samples: list[dict[str, float]], key: str) -> float:
    """Least-squares rate (per second) of counter `key` over timed samples.

    Reliable traffic arrives in steps (the whole window of every sender is
    committed together, then SENT for all of it), so the difference of two
    snapshots is off by up to one step; the slope over samples taken every
    10 ms is not.
    """
    n = len(samples)
    if n < 2:
        return 0.0
    ts = [x["t"] / _NS for x in samples]
    ys = [x[key] for x in samples]
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var if var else 0.0


# --- pairs: throughput and latency ------------------------------------------------


async def connect(host: str, port: int, conn: Conn, ws: bool = False) -> Conn:
    loop = asyncio.get_running_loop()
    await loop.create_connection((lambda: WsShim(conn)) if ws else (lambda: conn), host, port)
    async with asyncio.timeout(30):
        await conn.ready
    return conn


def message_template(peer: str, payload_bytes: int, reliable: bool) -> tuple[bytes, int]:
    """One MESSAGE frame to `peer`, and the offset of its payload in the frame."""
    payload = bytes(payload_bytes)
    if reliable:
        m = Message(1, peer.encode(), payload, flags=Flag.DELIVERY_RECEIPT)
    else:
        m = Message(0, peer.encode(), payload, expiry_s=0, flags=0)
    frame = encode_message(m)
    return frame, len(frame) - payload_bytes


async def run_pairs(spec: dict[str, Any], control: Control) -> None:
    """``throughput`` (closed loop, windowed) and ``latency`` (open loop, paced)."""
    loop = asyncio.get_running_loop()
    host, port = spec["host"], spec["port"]
    reliable = spec["mode"] == "reliable"
    timed = spec["kind"] == "latency"
    window = spec.get("window", 200)
    stats = Stats()
    senders: list[Sender] = []
    receivers: list[Receiver] = []
    for s_token, r_token, r_address in spec["pairs"]:
        template, payload_off = message_template(r_address, spec["payload"], reliable)
        receivers.append(Receiver(hello_bytes(r_token, "r"), loop.create_future(), stats, timed))
        senders.append(Sender(hello_bytes(s_token, "s"), loop.create_future(), template,
                              payload_off, reliable, window, max(1, window // 4)))
    # Receivers first: a transient message to an offline user is not relayed.
    ws = bool(spec.get("ws"))
    await asyncio.gather(*(connect(host, port, r, ws) for r in receivers))
    if spec.get("rcvlowat"):
        # Wake a receiver only once this much is queued: the server writes every
        # frame with its own send(), and a wakeup plus a window-update ACK per
        # 165-byte segment would make the generator the bottleneck.  Safe from
        # stalls: the window keeps far more than this in flight.
        for r in receivers:
            assert r.transport is not None
            sock = r.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, spec["rcvlowat"])
    await asyncio.gather(*(connect(host, port, s, ws) for s in senders))
    for s, r in zip(senders, receivers, strict=True):
        s.receiver = r
        if not reliable:
            r.on_count = s.pump
    emit({"event": "ready", "connections": len(senders) + len(receivers)})

    t0 = await control.go()
    warm = int(spec["warmup_s"] * _NS)
    t_begin, t_end = t0 + warm, t0 + warm + int(spec["measure_s"] * _NS)

    def snapshot() -> dict[str, float]:
        return {"t": time.monotonic_ns(), "cpu": cpu_seconds(),
                "written": sum(s.written for s in senders),
                "received": sum(r.count for r in receivers),
                "sent": sum(s.sent for s in senders),
                "delivered": sum(s.delivered for s in senders),
                "other": sum(s.other for s in senders)}

    samples: list[dict[str, float]] = []

    async def sample() -> None:
        while True:
            samples.append(snapshot())
            await asyncio.sleep(0.01)

    async def confirm_reports() -> None:
        while True:
            await asyncio.sleep(0.05)
            for s in senders:
                s.confirm_reports()

    async def pace() -> None:
        """Open loop: whatever is due by now, round robin over the senders, every ~1 ms."""
        rate = spec["rate"]
        due_total = nxt = 0
        counts = [0] * len(senders)
        while True:
            now = time.monotonic_ns()
            due = (now - t0) * rate // _NS
            if due > due_total:
                for _ in range(due - due_total):
                    counts[nxt] += 1
                    nxt = (nxt + 1) % len(senders)
                due_total = due
                for i, c in enumerate(counts):
                    if c:
                        senders[i].write_batch(c, now)
                        counts[i] = 0
            await asyncio.sleep(0.001)

    await sleep_until(t0)
    async with asyncio.TaskGroup() as tg:
        bg = [tg.create_task(confirm_reports())]
        if timed:
            bg.append(tg.create_task(pace()))
        else:
            for s in senders:
                s.running = True
                s.pump()
        await sleep_until(t_begin)
        start = snapshot()
        stats.recording = True
        sampler = tg.create_task(sample())
        await sleep_until(t_end)
        stats.recording = False
        end = snapshot()
        sampler.cancel()
        samples.append(end)
        for s in senders:
            s.running = False
        for task in bg:
            task.cancel()
    closed = Counter(c.closed_by for c in [*senders, *receivers] if c.closed_by)
    delta = {k: end[k] - start[k] for k in start}
    keys = ("written", "received", "sent", "delivered")
    emit({"event": "result", "seconds": delta["t"] / _NS, "cpu_s": delta["cpu"],
          **{k: delta[k] for k in keys}, "failed_status": delta["other"],
          "rates": {k: slope(samples, k) for k in keys},
          "latency_us": [x // 1000 for x in stats.latencies] if timed else [],
          "closed": dict(closed),
          **({"samples": samples} if spec.get("samples") else {})})
    await control.line()
    for c in [*senders, *receivers]:
        c.close()
    emit({"event": "bye"})


# --- conns: idle connections (memory) and connection rate (connect) ------------------


async def open_tcp(host: str, port: int, src: str, hello: bytes,
                   deferred: bool = False, ws: bool = False) -> HelloConn:
    """A TCP connection from source address `src`; HELLO is sent unless `deferred`."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((src, 0))
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    conn = HelloConn(hello, loop.create_future(), deferred)
    await loop.create_connection((lambda: WsShim(conn)) if ws else (lambda: conn), sock=sock)
    return conn


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:120]


async def run_conns(spec: dict[str, Any], control: Control) -> None:
    """Authenticate every connection of the spec, `concurrency` handshakes in flight.

    Normally each handshake is TCP connect + HELLO -> WELCOME.  With
    ``preconnect``, every TCP connection is opened before the start and only
    HELLO -> WELCOME is timed: on loopback the connecting side pays for most
    of the kernel's TCP handshake, which caps what one generator CPU can open.
    """
    host, port = spec["host"], spec["port"]
    timeout = spec.get("timeout_s", 30)
    opened: list[HelloConn] = []
    handshake_ns: list[int] = []
    failures: Counter[str] = Counter()
    preconnected: list[HelloConn] = []

    async def connect_all() -> None:
        for token, device, src in todo:
            try:
                preconnected.append(await open_tcp(host, port, src, hello_bytes(token, device),
                                                   deferred=True))
            except OSError as exc:
                failures[_failure(exc)] += 1

    async def hello_worker() -> None:
        for conn in pending:
            t = time.monotonic_ns()
            conn.send_hello()
            try:
                async with asyncio.timeout(timeout):
                    await conn.ready
            except (OSError, TimeoutError) as exc:
                failures[_failure(exc)] += 1
                continue
            handshake_ns.append(time.monotonic_ns() - t)
            opened.append(conn)

    async def connect_worker() -> None:
        for token, device, src in todo:
            t = time.monotonic_ns()
            try:
                async with asyncio.timeout(timeout):
                    conn = await open_tcp(host, port, src, hello_bytes(token, device),
                                          ws=bool(spec.get("ws")))
                    await conn.ready
            except (OSError, TimeoutError) as exc:
                failures[_failure(exc)] += 1
                continue
            handshake_ns.append(time.monotonic_ns() - t)
            opened.append(conn)

    todo: Iterator[list[str]] = iter(spec["conns"])
    pending: Iterator[HelloConn] = iter(preconnected)
    worker = connect_worker
    if spec.get("preconnect"):
        await asyncio.gather(*(connect_all() for _ in range(spec["concurrency"])))
        pending = iter(preconnected)
        worker = hello_worker
    emit({"event": "ready", "connections": len(preconnected)})
    t0 = await control.go()
    await sleep_until(t0)
    start, cpu0 = time.monotonic_ns(), cpu_seconds()
    await asyncio.gather(*(worker() for _ in range(spec["concurrency"])))
    end, cpu1 = time.monotonic_ns(), cpu_seconds()
    emit({"event": "result", "start_ns": start, "end_ns": end, "cpu_s": cpu1 - cpu0,
          "welcomed": len(opened), "failed": sum(failures.values()),
          "failures": dict(failures.most_common(5)),
          "handshake_ms": percentiles(handshake_ns)})
    # Idle until told otherwise; report anything the server closes meanwhile.
    await control.line()
    lost = Counter(c.closed_by for c in opened if c.closed_by)
    for c in {*opened, *preconnected}:
        c.close()
    emit({"event": "bye", "lost": sum(lost.values()), "closed": dict(lost.most_common(5))})


# --- main -------------------------------------------------------------------------


async def amain(spec: dict[str, Any]) -> None:
    control = await Control.open()
    if spec["kind"] in ("throughput", "latency"):
        await run_pairs(spec, control)
    elif spec["kind"] == "conns":
        await run_conns(spec, control)
    elif spec["kind"] == "presence":
        from tests.bench.presencegen import run_presence  # issue 16
        await run_presence(spec, control)
    elif spec["kind"] == "sdk":
        from tests.bench.sdkgen import run_sdk_pairs  # the SDK only where it is measured
        await run_sdk_pairs(spec, control, emit, cpu_seconds, slope, sleep_until)
    else:
        raise ValueError(f"unknown kind {spec['kind']!r}")
    # Let the transports flush their close before the loop goes away.
    await asyncio.sleep(0.05)


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    try:
        run(amain(spec))
    except Exception as exc:  # noqa: BLE001 - any failure is reported to the harness
        with contextlib.suppress(Exception):
            emit({"event": "error", "message": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
