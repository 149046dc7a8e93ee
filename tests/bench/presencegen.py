"""The presence load generator (issue 16): ``loadgen`` runs it for specs of kind "presence".

Two modes, each driven by the harness as loadgen.py describes (ready, go, result, stop):

* ``fanout``: `subscribers` connections (EXTENSIONS) watch one user, the star, whose only
  device then connects and disconnects in a loop as fast as the server lets it: every
  connect is ONLINE and every disconnect OFFLINE to each subscriber.  The figure is fan-outs
  in the measured interval times subscribers, over its length; every entry is then counted
  on the subscribers' side (nothing may be missing).  Subscribers set SO_RCVLOWAT so that
  they wake once per many frames (the generator must not be what limits the rate).
* ``typing``: typists send TYPING to their peer at a steady aggregate rate (open loop,
  ~1 ms bursts); each peer's PRESENCE entry is timed against its send (FIFO per pair).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from appliance.protocol.wire import (
    PREFACE,
    Close,
    CloseCode,
    FrameType,
    Hello,
    HelloFlag,
    encode,
)
from appliance.protocol.wire.presence import (
    PresenceKind,
    PresenceSet,
    PresenceSubscribe,
    SubscribeOp,
)
from tests.bench.loadgen import (
    Conn,
    Control,
    connect,
    cpu_seconds,
    emit,
    percentiles,
    sleep_until,
)

_HDR = struct.Struct(">IB")
_hdr = _HDR.unpack_from
_PRESENCE = int(FrameType.PRESENCE)
_NS = 1_000_000_000
#: Connections opened at once while setting up.
_CONCURRENCY = 100


def presence_hello(token: str, device: str) -> bytes:
    return PREFACE + encode(Hello(token=token.encode(), device_id=device.encode(),
                                  client_flags=HelloFlag.EXTENSIONS))


class Countdown:
    """An event set once `hit` was called `count` times."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.done = asyncio.Event()
        if count <= 0:
            self.done.set()

    def hit(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()


class Watcher(Conn):
    """Counts PRESENCE entries; `on_entries` sees each frame's count; once `target`
    entries are in, `reached` is hit (once)."""

    def __init__(self, hello: bytes, ready: asyncio.Future[None],
                 on_entries: Callable[[int], None] | None = None) -> None:
        super().__init__(hello, ready)
        self.entries = 0
        self.snapshot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_entries = on_entries
        self.target = 0
        self.reached: Countdown | None = None

    def expect(self, target: int, reached: Countdown) -> None:
        """Hit `reached` once `target` entries arrived (now, if they did)."""
        self.target, self.reached = target, reached
        if self.entries >= target:
            self.reached = None
            reached.hit()

    def on_frames(self, data: bytes) -> int:
        pos, end = 0, len(data)
        while end - pos >= 5:
            length, ftype = _hdr(data, pos)
            fend = pos + 5 + length
            if fend > end:
                break
            if ftype == _PRESENCE:
                count = data[pos + 5] << 8 | data[pos + 6]
                self.entries += count
                if self._on_entries is not None:
                    self._on_entries(count)
                if self.reached is not None and self.entries >= self.target:
                    self.reached.hit()
                    self.reached = None
                if not self.snapshot.done():
                    self.snapshot.set_result(None)
            else:
                self.control(ftype, data[pos + 5:fend])
            pos = fend
        return pos


class Star(Conn):
    """The watched user's device: `gone` completes when the server has hung up."""

    def __init__(self, hello: bytes, ready: asyncio.Future[None]) -> None:
        super().__init__(hello, ready)
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.gone.done():
            self.gone.set_result(None)


def _set_lowat(conn: Conn, value: int) -> None:
    if conn.transport is not None:
        sock = conn.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, value)


async def _open_all(host: str, port: int, conns: list[Conn]) -> None:
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def one(conn: Conn) -> None:
        async with gate:
            await connect(host, port, conn)

    await asyncio.gather(*(one(c) for c in conns))


async def run_fanout(spec: dict[str, Any], control: Control) -> None:
    host, port = spec["host"], spec["port"]
    loop = asyncio.get_running_loop()
    watchers = [Watcher(presence_hello(token, "w"), loop.create_future())
                for token in spec["subscribers"]]
    await _open_all(host, port, watchers)
    subscribe = encode(PresenceSubscribe(SubscribeOp.ADD, [spec["star_address"].encode()]))
    for w in watchers:
        w.write(subscribe)
    await asyncio.gather(*(w.snapshot for w in watchers))
    for w in watchers:
        _set_lowat(w, spec["rcvlowat"])
    star_hello = presence_hello(spec["star"], "star")
    emit({"event": "ready", "subscribers": len(watchers)})
    t0 = await control.go()
    start, end = t0 + int(spec["warmup_s"] * _NS), t0 + int((spec["warmup_s"]
                                                              + spec["measure_s"]) * _NS)
    await sleep_until(t0)
    cpu0 = cpu_seconds()
    cycles = measured = 0
    goodbye = encode(Close(CloseCode.NORMAL, ""))
    while time.monotonic_ns() < end:
        star = Star(star_hello, loop.create_future())
        await connect(host, port, star)  # its WELCOME: ONLINE went out before it
        online_at = time.monotonic_ns()
        # CLOSE, then the server's hang-up: it let the device go (OFFLINE went out),
        # so the next connection is not the same device replacing itself.
        star.write(goodbye)
        await star.gone
        cycles += 1
        if start <= online_at < end:
            measured += 1
    gen_cpu = cpu_seconds() - cpu0
    expected = 1 + 2 * cycles  # the snapshot, then ONLINE and OFFLINE per cycle
    drained = Countdown(len(watchers))
    for w in watchers:
        _set_lowat(w, 1)
        w.expect(expected, drained)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(drained.done.wait(), 30)
    received = sum(w.entries for w in watchers)
    emit({"event": "result", "cycles": cycles, "measured_cycles": measured,
          "deliveries_per_s": 2 * measured * len(watchers) / spec["measure_s"],
          "cycles_per_s": measured / spec["measure_s"],
          "missing": expected * len(watchers) - received, "cpu_s": gen_cpu,
          "seconds": spec["measure_s"]})
    await control.line()
    for w in watchers:
        w.close()
    emit({"event": "bye", "lost": 0, "closed": {}})


async def run_typing(spec: dict[str, Any], control: Control) -> None:
    host, port, rate = spec["host"], spec["port"], spec["rate"]
    loop = asyncio.get_running_loop()
    pairs = spec["pairs"]
    sent: list[deque[int]] = [deque() for _ in pairs]
    samples: list[int] = []
    window = [0, 0]  # the measured interval, once known
    outstanding = [0]
    answered = asyncio.Event()

    def receiver_of(i: int) -> Callable[[int], None]:
        def got(count: int) -> None:
            now = time.monotonic_ns()
            for _ in range(count):
                if sent[i]:
                    at = sent[i].popleft()
                    outstanding[0] -= 1
                    if window[0] <= at < window[1]:
                        samples.append(now - at)
            if not outstanding[0]:
                answered.set()
        return got

    typists = [Conn(presence_hello(p[0], "t"), loop.create_future()) for p in pairs]
    peers = [Watcher(presence_hello(p[1], "p"), loop.create_future(), receiver_of(i))
             for i, p in enumerate(pairs)]
    await _open_all(host, port, typists + peers)  # type: ignore[operator]
    frames = [encode(PresenceSet(PresenceKind.TYPING, peer=p[2].encode())) for p in pairs]
    for i, typist in enumerate(typists):  # the first reads who blocks whom: not timed
        typist.write(frames[i])
    await asyncio.gather(*(w.snapshot for w in peers))
    emit({"event": "ready"})
    t0 = await control.go()
    window[:] = [t0 + int(spec["warmup_s"] * _NS),
                 t0 + int((spec["warmup_s"] + spec["measure_s"]) * _NS)]
    await sleep_until(t0)
    cpu0 = cpu_seconds()
    done = 0
    turn = 0
    while (now := time.monotonic_ns()) < window[1]:
        due = (now - t0) * rate // _NS
        while done < due:
            i = turn % len(pairs)
            sent[i].append(time.monotonic_ns())
            outstanding[0] += 1
            answered.clear()
            typists[i].write(frames[i])
            done += 1
            turn += 1
        await asyncio.sleep(0.001)
    gen_cpu = cpu_seconds() - cpu0
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(answered.wait(), 10)
    emit({"event": "result", "sent": done, "missing": sum(len(q) for q in sent),
          "rate": len(samples) / spec["measure_s"], "cpu_s": gen_cpu,
          "seconds": spec["measure_s"], **percentiles(samples)})
    await control.line()
    for c in typists + peers:  # type: ignore[operator]
        c.close()
    emit({"event": "bye", "lost": 0, "closed": {}})


async def run_presence(spec: dict[str, Any], control: Control) -> None:
    if spec["mode"] == "fanout":
        await run_fanout(spec, control)
    else:
        await run_typing(spec, control)
