"""The four scenarios of issue #2: throughput, latency, memory, connect.

Each `run` starts a fresh server on a fresh copy of the template data
directory, drives it with load generators, and returns one run's figures
keyed by `Row.key`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from tests.bench.harness import (
    EDGE_OFF,
    BenchError,
    BenchMariaDB,
    Usage,
    Users,
    cpu_seconds,
    generators,
    rss_bytes,
    server,
    sleep_until,
    start_together,
    wait_quiet,
)
from tests.bench.report import Row, at_least, at_most

PAIRS = 50
PAYLOAD_BYTES = 100
DEVICES_PER_USER = 8  # the server's default limits.max_devices
CONNS_PER_SOURCE = 500  # <= 1,000 connections per 127.0.0.x source address
_NS = 1_000_000_000


@dataclass
class Settings:
    """Command line choices shared by every scenario."""

    quick: bool
    generators: int
    server_cpu: int
    gen_cpu: int
    root: Path
    quiet_wait_s: float = 60.0
    latency_rate: int = 10_000
    rcvlowat: int = 16_384
    users: Users | None = None
    #: The MariaDB server of the `mariadb` scenario, started when first needed.
    mariadb: BenchMariaDB | None = None
    #: CPU for mariadbd (None: not pinned; it is its own service).
    db_cpu: int | None = None
    #: Why the current run's timing is not trustworthy ("" if it is).
    disturbed: str = ""

    @property
    def warmup_s(self) -> float:
        return 0.5 if self.quick else 1.0

    @property
    def measure_s(self) -> float:
        return 2.0 if self.quick else 5.0

    @property
    def cpus(self) -> tuple[int, ...]:
        return (self.server_cpu, self.gen_cpu)

    def template(self) -> Users:
        assert self.users is not None
        return self.users

    def database_server(self) -> BenchMariaDB:
        if self.mariadb is None:
            self.mariadb = BenchMariaDB(self.root / "mariadb-server", self.db_cpu)
        return self.mariadb

    def settle(self) -> None:
        """Before a run: wait a while for other processes to leave the two CPUs alone."""
        if self.quiet_wait_s <= 0:
            return
        started = time.monotonic()
        pct = wait_quiet(self.cpus, self.quiet_wait_s)
        waited = time.monotonic() - started
        if pct > 15:
            warn(f"CPUs {self.cpus} still {pct:.0f}% busy with other work after {waited:.0f} s;"
                 " running anyway")
        elif waited > 2:
            print(f"  (waited {waited:.0f} s for CPUs {self.cpus} to be idle)", flush=True)


def warn(text: str) -> None:
    print(f"  warning: {text}", file=sys.stderr, flush=True)


#: Above these, a run's timing figures are not trusted (and `--retries` reruns it).
#: Steal lowers a rate in proportion, but every stolen 10 ms tick is a 10 ms
#: latency spike: the latency scenario tolerates less of it.
OTHER_LOAD_LIMIT_PCT = 15.0
STEAL_LIMIT_PCT = 10.0
LATENCY_STEAL_LIMIT_PCT = 3.0


def check_disturbance(s: Settings, what: str, other_pct: float, steal_pct: float,
                      other_limit: float = OTHER_LOAD_LIMIT_PCT,
                      steal_limit: float = STEAL_LIMIT_PCT) -> None:
    """Record (and print) that other processes or the hypervisor took the CPUs."""
    reasons = []
    if other_pct > other_limit:
        reasons.append(f"{other_pct:.0f}% of a CPU went to other processes")
    if steal_pct > steal_limit:
        reasons.append(f"the hypervisor stole {steal_pct:.1f}% of the CPUs' time")
    if reasons:
        text = f"{what}: {' and '.join(reasons)}"
        s.disturbed = f"{s.disturbed}; {text}" if s.disturbed else text
        warn(f"{text}: this run is disturbed")


class Scenario(Protocol):
    """What `python -m tests.bench` runs: `run` is one run, returning figures by `Row.key`."""

    name: str
    rows: ClassVar[list[Row]]

    def title(self, s: Settings) -> str: ...

    def users_needed(self, quick: bool) -> int: ...

    def run(self, s: Settings) -> dict[str, float]: ...


# --- 1:1 pairs ------------------------------------------------------------------------


def run_pairs(s: Settings, kind: str, mode: str, *, window: int = 200, rate: int = 0,
              gens: int = 1, rcvlowat: int = 0, ws: bool = False,
              mariadb: bool = False, edge: str = EDGE_OFF) -> dict[str, float]:
    """50 sender -> receiver pairs; figures of the measuring interval.

    `kind` "sdk" runs the pairs through the SDK (tests/bench/sdkgen.py);
    `mariadb` runs the server on a MariaDB copy of the template.
    """
    users = s.template()
    pairs = [[users.tokens[2 * i], users.tokens[2 * i + 1], users.addresses[2 * i + 1]]
             for i in range(PAIRS)]
    warm, measure = s.warmup_s, s.measure_s
    database = s.database_server() if mariadb else None
    with contextlib.ExitStack() as stack:
        run_dir = stack.enter_context(users.fresh_copy(s.root))
        if database is not None:
            database.prepare(run_dir / "data")
        s.settle()
        srv = stack.enter_context(server(run_dir / "data", s.server_cpu, edge=edge))
        assert srv.proc is not None
        pid = srv.proc.pid
        specs = [{"kind": kind, "mode": mode, "host": srv.host, "port": srv.port,
                  "pairs": pairs[g::gens], "payload": PAYLOAD_BYTES, "window": window,
                  "rate": rate // gens, "rcvlowat": rcvlowat, "warmup_s": warm,
                  "measure_s": measure, "store_dir": str(run_dir / f"sdk-stores-{g}"),
                  "ws": ws}
                 for g in range(gens)]
        with generators(specs, run_dir, s.gen_cpu) as gs:
            for g in gs:
                g.expect("ready", 60)
            t0 = start_together(gs)
            sleep_until(t0 + int(warm * _NS))
            usage = Usage(pid, s.cpus, database.pid if database else None)
            sleep_until(t0 + int((warm + measure) * _NS))
            usage.stop()
            results = [g.expect("result", 60) for g in gs]
            for g in gs:
                g.finish()
        server_cpu_total = cpu_seconds(pid)
    seconds = sum(r["seconds"] for r in results) / len(results)
    closed: dict[str, int] = {}
    for r in results:
        for reason, n in r["closed"].items():
            closed[reason] = closed.get(reason, 0) + n
    if closed:
        warn(f"{kind}/{mode}: connections closed during the run: {closed}")
    gen_cpu_s = sum(r["cpu_s"] for r in results)
    other = usage.other_pct(gen_cpu_s)
    check_disturbance(s, f"{kind}/{mode}", other, usage.steal_s / usage.seconds * 100,
                      steal_limit=LATENCY_STEAL_LIMIT_PCT if kind == "latency" else STEAL_LIMIT_PCT)
    out = {k: sum(r["rates"][k] for r in results)
           for k in ("received", "written", "sent", "delivered")}
    out.update({
        "failed": float(sum(r["failed_status"] for r in results)),
        "server_cpu": usage.server_pct,
        "db_cpu": usage.database_pct,
        "gen_cpu": 100 * gen_cpu_s / seconds,
        "other_cpu": other,
        "steal_ms": 1000 * usage.steal_s,
        "server_cpu_s": server_cpu_total,
    })
    samples = sorted(x for r in results for x in r["latency_us"])
    if samples:
        n = len(samples)
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)):
            out[name] = samples[min(n - 1, int(q * n))] / 1000
        out["max"] = samples[-1] / 1000
    return out


def _prefixed(prefix: str, figures: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}.{k}": v for k, v in figures.items()}


def _cpu_rows(prefix: str, label: str) -> list[Row]:
    return [Row(f"{prefix}.server_cpu", f"{label}: server CPU % (measured interval)"),
            Row(f"{prefix}.gen_cpu", f"{label}: generator CPU % (all generators)"),
            Row(f"{prefix}.other_cpu", f"{label}: other load on the 2 CPUs, %"),
            Row(f"{prefix}.server_cpu_s", f"{label}: server CPU s (whole run)", "{:,.1f}")]


class Throughput:
    name = "throughput"
    rows: ClassVar[list[Row]] = [
        Row("transient.received", "transient: received msg/s", target=">= 80,000",
            ok=at_least(80_000)),
        *_cpu_rows("transient", "transient"),
        Row("reliable.received", "reliable: received msg/s", target=">= 25,000",
            ok=at_least(25_000)),
        Row("reliable.sent", "reliable: SENT/s"),
        Row("reliable.delivered", "reliable: DELIVERED/s", target=">= 25,000",
            ok=at_least(25_000)),
        Row("reliable.failed", "reliable: failure statuses"),
        *_cpu_rows("reliable", "reliable"),
    ]

    def title(self, s: Settings) -> str:
        lowat = f", receivers' SO_RCVLOWAT {s.rcvlowat:,} B" if s.rcvlowat else ""
        return (f"throughput: {PAIRS} sender->receiver pairs, {PAYLOAD_BYTES}-byte payloads,"
                f" closed loop (transient: 500 unreceived per sender{lowat};"
                f" reliable: 200 un-SENT per sender), {s.warmup_s:g} s warm-up +"
                f" {s.measure_s:g} s measured, {s.generators} generator process(es)")

    def users_needed(self, quick: bool) -> int:
        return 2 * PAIRS

    def run(self, s: Settings) -> dict[str, float]:
        out = _prefixed("transient", run_pairs(s, "throughput", "transient", window=500,
                                               gens=s.generators, rcvlowat=s.rcvlowat))
        out.update(_prefixed("reliable", run_pairs(s, "throughput", "reliable", window=200,
                                                   gens=s.generators)))
        return out


class Latency:
    name = "latency"
    rows: ClassVar[list[Row]] = [
        Row("transient.p50", "transient: p50 ms", "{:.2f}"),
        Row("transient.p99", "transient: p99 ms", "{:.2f}", "<= 5", at_most(5)),
        Row("transient.p999", "transient: p99.9 ms", "{:.2f}"),
        Row("transient.max", "transient: max ms", "{:.2f}"),
        Row("transient.received", "transient: received msg/s"),
        Row("transient.steal_ms", "transient: CPU time stolen by the hypervisor, ms"),
        *_cpu_rows("transient", "transient"),
        Row("reliable.p50", "reliable: p50 ms", "{:.2f}"),
        Row("reliable.p99", "reliable: p99 ms", "{:.2f}", "<= 15", at_most(15)),
        Row("reliable.p999", "reliable: p99.9 ms", "{:.2f}"),
        Row("reliable.max", "reliable: max ms", "{:.2f}"),
        Row("reliable.received", "reliable: received msg/s"),
        Row("reliable.delivered", "reliable: DELIVERED/s"),
        Row("reliable.steal_ms", "reliable: CPU time stolen by the hypervisor, ms"),
        *_cpu_rows("reliable", "reliable"),
    ]

    def title(self, s: Settings) -> str:
        return (f"latency: send -> receive over {PAIRS} pairs at a steady {s.latency_rate:,} msg/s"
                f" (open loop, ~1 ms bursts), {PAYLOAD_BYTES}-byte payloads,"
                f" {s.warmup_s:g} s warm-up + {s.measure_s:g} s measured")

    def users_needed(self, quick: bool) -> int:
        return 2 * PAIRS

    def run(self, s: Settings) -> dict[str, float]:
        rate = s.latency_rate
        out = _prefixed("transient", run_pairs(s, "latency", "transient", rate=rate))
        out.update(_prefixed("reliable", run_pairs(s, "latency", "reliable", rate=rate)))
        return out


# --- many connections ---------------------------------------------------------------


def conn_specs(s: Settings, host: str, port: int, count: int, concurrency: int,
               gens: int) -> list[dict[str, Any]]:
    """`count` connections: user i // 8, device i % 8, 500 per source address."""
    users = s.template()
    conns = [[users.tokens[i // DEVICES_PER_USER], f"d{i % DEVICES_PER_USER}",
              f"127.0.0.{2 + i // CONNS_PER_SOURCE}"] for i in range(count)]
    if 2 + (count - 1) // CONNS_PER_SOURCE > 250:
        raise BenchError(f"{count} connections need more than 127.0.0.2-250")
    return [{"kind": "conns", "host": host, "port": port, "conns": conns[g::gens],
             "concurrency": max(1, concurrency // gens)} for g in range(gens)]


def open_conns(s: Settings, specs: list[dict[str, Any]], workdir: Path, pid: int,
               first: int = 0, idle_s: float = 0.0, timed: bool = True) -> dict[str, float]:
    """Run `specs`; after every WELCOME, wait `idle_s` and read the server's RSS."""
    count = sum(len(spec["conns"]) for spec in specs)
    with generators(specs, workdir, s.gen_cpu, first) as gs:
        for g in gs:
            g.expect("ready", 60)
        usage = Usage(pid, s.cpus)
        start_together(gs)
        results = [g.expect("result", 60 + count / 100) for g in gs]
        usage.stop()
        time.sleep(idle_s)
        rss = rss_bytes(pid)
        byes = [g.finish() for g in gs]
    welcomed = sum(r["welcomed"] for r in results)
    if welcomed < count:
        warn(f"only {welcomed} of {count} connections authenticated: "
             f"{[r['failures'] for r in results]}")
    lost = sum(b["lost"] for b in byes if b)
    if lost:
        warn(f"{lost} idle connections were closed by the server: "
             f"{[b['closed'] for b in byes if b]}")
    seconds = (max(r["end_ns"] for r in results) - min(r["start_ns"] for r in results)) / _NS
    gen_cpu_s = sum(r["cpu_s"] for r in results)
    if timed:
        # Connection setup runs partly in softirq context (no process is
        # charged), so allow more unexplained load than for message traffic.
        check_disturbance(s, "connect", usage.other_pct(gen_cpu_s),
                          usage.steal_s / usage.seconds * 100, other_limit=30.0)
    return {"rate": welcomed / seconds, "seconds": seconds, "welcomed": welcomed,
            "failed": float(sum(r["failed"] for r in results)), "lost": float(lost),
            "p50": max(r["handshake_ms"].get("p50", 0) for r in results),
            "p99": max(r["handshake_ms"].get("p99", 0) for r in results),
            "server_cpu": usage.server_pct,
            "gen_cpu": 100 * gen_cpu_s / seconds,
            "other_cpu": usage.other_pct(gen_cpu_s),
            "rss": rss}


class Memory:
    name = "memory"
    rows: ClassVar[list[Row]] = [
        Row("per_conn", "bytes per idle authenticated connection", target="<= 2,500",
            ok=at_most(2500)),
        Row("rss_before", "server RSS before, MiB", "{:,.1f}"),
        Row("rss_after", "server RSS after, MiB", "{:,.1f}"),
        Row("welcomed", "connections authenticated"),
        Row("lost", "connections closed by the server"),
        Row("rate", "connections/s while filling"),
        Row("server_cpu_s", "server CPU s (whole run)", "{:,.1f}"),
    ]

    def count(self, quick: bool) -> int:
        return 3_000 if quick else 15_000

    def title(self, s: Settings) -> str:
        n = self.count(s.quick)
        return (f"memory: server RSS growth for {n:,} idle authenticated connections"
                f" ({math.ceil(n / DEVICES_PER_USER):,} users x {DEVICES_PER_USER} devices,"
                f" {max(2, s.generators)} generators), read 2 s after the last WELCOME")

    def users_needed(self, quick: bool) -> int:
        return math.ceil(self.count(quick) / DEVICES_PER_USER)

    def run(self, s: Settings, ws: bool = False) -> dict[str, float]:
        n = self.count(s.quick)
        s.settle()
        with s.template().fresh_copy(s.root) as run_dir, \
                server(run_dir / "data", s.server_cpu) as srv:
            assert srv.proc is not None
            pid = srv.proc.pid
            time.sleep(0.5)
            before = rss_bytes(pid)
            specs = conn_specs(s, srv.host, srv.port, n, 256, max(2, s.generators))
            for spec in specs:
                spec["ws"] = ws
            fill = open_conns(s, specs, run_dir, pid, idle_s=2.0, timed=False)
            server_cpu = cpu_seconds(pid)
        return {"per_conn": (fill["rss"] - before) / fill["welcomed"],
                "rss_before": before / 2**20, "rss_after": fill["rss"] / 2**20,
                "welcomed": fill["welcomed"], "lost": fill["lost"], "rate": fill["rate"],
                "server_cpu_s": server_cpu}


class Connect:
    name = "connect"
    concurrency = 256
    rows: ClassVar[list[Row]] = [
        Row("new.rate", "new devices: connects+HELLO/WELCOME per s", target=">= 5,000",
            ok=at_least(5000)),
        Row("new.p50", "new devices: handshake p50 ms", "{:.1f}"),
        Row("new.p99", "new devices: handshake p99 ms", "{:.1f}"),
        Row("new.server_cpu", "new devices: server CPU %"),
        Row("new.gen_cpu", "new devices: generator CPU %"),
        Row("new.other_cpu", "new devices: other load on the 2 CPUs, %"),
        Row("known.rate", "known devices (reconnect): per s", target=">= 5,000",
            ok=at_least(5000)),
        Row("known.p50", "known devices: handshake p50 ms", "{:.1f}"),
        Row("known.p99", "known devices: handshake p99 ms", "{:.1f}"),
        Row("known.server_cpu", "known devices: server CPU %"),
        Row("known.gen_cpu", "known devices: generator CPU %"),
        Row("known.other_cpu", "known devices: other load on the 2 CPUs, %"),
        Row("hello.rate", "HELLO/WELCOME per s, TCP already open (known)"),
        Row("hello.p99", "HELLO/WELCOME p99 ms, TCP already open", "{:.1f}"),
        Row("hello.server_cpu", "HELLO/WELCOME: server CPU %"),
        Row("stub.rate", "generator ceiling: connects/s vs stub server"),
        Row("stub.gen_cpu", "generator ceiling: generator CPU %"),
        Row("failed", "failed handshakes"),
        Row("server_cpu_s", "server CPU s (whole run)", "{:,.1f}"),
    ]

    def count(self, quick: bool) -> int:
        return 2_000 if quick else 10_000

    def hello_count(self, quick: bool) -> int:
        # Every TCP connection must get its WELCOME within the server's 10 s
        # handshake timeout, counted from when it was opened.
        return 2_000 if quick else 4_000

    def title(self, s: Settings) -> str:
        return (f"connect: {self.count(s.quick):,} connections, each TCP connect + HELLO ->"
                f" WELCOME, {self.concurrency} handshakes in flight,"
                f" {max(2, s.generators)} generators; then all closed and the same devices"
                f" reconnect; then {self.hello_count(s.quick):,} HELLOs on TCP connections"
                " opened beforehand; then the generators against a stub server that answers"
                " every HELLO (what they can measure at most)")

    def users_needed(self, quick: bool) -> int:
        return math.ceil(self.count(quick) / DEVICES_PER_USER)

    def run(self, s: Settings) -> dict[str, float]:
        n = self.count(s.quick)
        gens = max(2, s.generators)
        s.settle()
        with s.template().fresh_copy(s.root) as run_dir:
            with server(run_dir / "data", s.server_cpu) as srv:
                assert srv.proc is not None
                pid = srv.proc.pid
                specs = conn_specs(s, srv.host, srv.port, n, self.concurrency, gens)
                new = open_conns(s, specs, run_dir, pid)
                time.sleep(1.0)  # let the server see every close
                known = open_conns(s, specs, run_dir, pid, first=gens)
                time.sleep(1.0)
                hello_specs = conn_specs(s, srv.host, srv.port, self.hello_count(s.quick),
                                         self.concurrency, gens)
                for spec in hello_specs:
                    spec["preconnect"] = True
                hello = open_conns(s, hello_specs, run_dir, pid, first=2 * gens)
                server_cpu = cpu_seconds(pid)
            with server(run_dir / "stub", s.server_cpu, stub=True) as stub:
                assert stub.proc is not None
                stub_specs = conn_specs(s, stub.host, stub.port, n, self.concurrency, gens)
                ceiling = open_conns(s, stub_specs, run_dir, stub.proc.pid, first=3 * gens)
        out = {f"new.{k}": v for k, v in new.items()}
        out.update({f"known.{k}": v for k, v in known.items()})
        out.update({f"hello.{k}": v for k, v in hello.items()})
        out.update({f"stub.{k}": v for k, v in ceiling.items()})
        out["failed"] = new["failed"] + known["failed"] + hello["failed"]
        out["server_cpu_s"] = server_cpu
        return out


class Sdk:
    """The reliable 1:1 run through the SDK next to the raw generator (issue #3)."""

    name = "sdk"
    rows: ClassVar[list[Row]] = [
        Row("raw.received", "raw generator: received msg/s"),
        *_cpu_rows("raw", "raw"),
        Row("sdk.received", "SDK: received msg/s"),
        Row("sdk.sent", "SDK: SENT/s"),
        Row("sdk.delivered", "SDK: DELIVERED/s"),
        Row("sdk.failed", "SDK: failure statuses"),
        *_cpu_rows("sdk", "SDK"),
        Row("ratio", "SDK / raw generator, %", "{:.0f}", ">= 50", at_least(50)),
    ]

    def title(self, s: Settings) -> str:
        return (f"sdk: {PAIRS} sender->receiver pairs, reliable, {PAYLOAD_BYTES}-byte payloads,"
                f" 200 un-SENT per sender, through 100 SDK clients (each with its own local"
                f" store) in ONE process, next to the raw generator; {s.warmup_s:g} s warm-up"
                f" + {s.measure_s:g} s measured")

    def users_needed(self, quick: bool) -> int:
        return 2 * PAIRS

    def run(self, s: Settings) -> dict[str, float]:
        out = _prefixed("raw", run_pairs(s, "throughput", "reliable", window=200))
        out.update(_prefixed("sdk", run_pairs(s, "sdk", "reliable", window=200)))
        out["ratio"] = 100 * out["sdk.received"] / max(1.0, out["raw.received"])
        return out


class WebSocket:
    """1:1 throughput through /v1/ws next to native, same generator (issue #4)."""

    name = "websocket"
    rows: ClassVar[list[Row]] = [
        Row("native.transient.received", "native transient: received msg/s"),
        Row("ws.transient.received", "WebSocket transient: received msg/s"),
        Row("ratio.transient", "WebSocket / native, transient, %", "{:.0f}", ">= 70",
            at_least(70)),
        Row("native.reliable.received", "native reliable: received msg/s"),
        Row("ws.reliable.received", "WebSocket reliable: received msg/s"),
        Row("ratio.reliable", "WebSocket / native, reliable, %", "{:.0f}", ">= 70",
            at_least(70)),
        Row("ws.transient.server_cpu", "WebSocket transient: server CPU %"),
        Row("ws.reliable.server_cpu", "WebSocket reliable: server CPU %"),
    ]

    def title(self, s: Settings) -> str:
        return (f"websocket: the throughput scenario ({PAIRS} pairs, {PAYLOAD_BYTES}-byte"
                " payloads) natively and through /v1/ws (one binary message per write),"
                f" {s.warmup_s:g} s warm-up + {s.measure_s:g} s measured")

    def users_needed(self, quick: bool) -> int:
        return 2 * PAIRS

    def run(self, s: Settings) -> dict[str, float]:
        out: dict[str, float] = {}
        for mode, window in (("transient", 500), ("reliable", 200)):
            for label, ws in (("native", False), ("ws", True)):
                out.update(_prefixed(f"{label}.{mode}", run_pairs(
                    s, "throughput", mode, window=window, ws=ws,
                    rcvlowat=s.rcvlowat if mode == "transient" else 0)))
            out[f"ratio.{mode}"] = 100 * out[f"ws.{mode}.received"] / max(
                1.0, out[f"native.{mode}.received"])
        return out


class WsMemory(Memory):
    """Idle connections through /v1/ws next to native ones (issue #4)."""

    name = "wsmemory"
    rows: ClassVar[list[Row]] = [
        Row("native.per_conn", "native: bytes per idle authenticated connection"),
        Row("ws.per_conn", "WebSocket: bytes per idle authenticated connection"),
        Row("extra", "WebSocket extra bytes per connection", target="<= 1,500",
            ok=at_most(1500)),
        Row("ws.welcomed", "WebSocket connections authenticated"),
    ]

    def title(self, s: Settings) -> str:
        return super().title(s).replace("memory:", "wsmemory: native, then WebSocket;", 1)

    def run(self, s: Settings, ws: bool = False) -> dict[str, float]:
        out = _prefixed("native", super().run(s))
        out.update(_prefixed("ws", super().run(s, ws=True)))
        out["extra"] = out["ws.per_conn"] - out["native.per_conn"]
        return out


class Rest:
    """``POST /v1/messages`` from a backend, with h2load, over HTTP/1.1 and HTTP/2 (issue #4)."""

    name = "rest"
    rows: ClassVar[list[Row]] = [
        Row("h1.rate", "HTTP/1.1 keep-alive: POST /v1/messages per s", target=">= 5,000",
            ok=at_least(5_000)),
        Row("h1.failed", "HTTP/1.1: failed requests"),
        Row("h1.server_cpu", "HTTP/1.1: server CPU %"),
        Row("h2.rate", "HTTP/2: POST /v1/messages per s", target=">= 5,000",
            ok=at_least(5_000)),
        Row("h2.failed", "HTTP/2: failed requests"),
        Row("h2.server_cpu", "HTTP/2: server CPU %"),
        Row("batch.messages", "HTTP/2, arrays of 100: messages per s", target=">= 25,000",
            ok=at_least(25_000)),
        Row("batch.rate", "HTTP/2, arrays of 100: requests per s"),
        Row("batch.failed", "HTTP/2, arrays of 100: failed requests"),
        Row("batch.sent", "HTTP/2, arrays of 100: answers SENT in a sample request"),
        Row("batch.server_cpu", "HTTP/2, arrays of 100: server CPU %"),
    ]

    def title(self, s: Settings) -> str:
        return (f"rest: {self.requests(s.quick):,} POST /v1/messages (100-byte text, stored for an"
                " offline user) with h2load on the generator CPU: HTTP/1.1 with 50 keep-alive"
                " connections; HTTP/2 with 10 connections x 10 streams; then arrays of"
                f" {BATCH} messages (to {BATCH} offline users) over HTTP/2, 10 connections x 4"
                " streams (issue 16)")

    @staticmethod
    def requests(quick: bool) -> int:
        return 10_000 if quick else 40_000

    def users_needed(self, quick: bool) -> int:
        return 1 + BATCH

    def run(self, s: Settings) -> dict[str, float]:
        users = s.template()
        out: dict[str, float] = {}
        single = {"from": users.addresses[0], "to": users.addresses[1], "text": "x" * 100}
        batch = [{"from": users.addresses[0], "to": users.addresses[1 + i], "text": "x" * 100}
                 for i in range(BATCH)]
        for label, flags, doc, n in (
                ("h1", ["--h1", "-c", "50", "-m", "1"], single, self.requests(s.quick)),
                ("h2", ["-c", "10", "-m", "10"], single, self.requests(s.quick)),
                ("batch", ["-c", "10", "-m", "4"], batch, 10 * self.requests(s.quick) // BATCH)):
            s.settle()
            with users.fresh_copy(s.root) as run_dir, \
                    server(run_dir / "data", s.server_cpu) as srv:
                assert srv.proc is not None
                body = run_dir / "body.json"
                body.write_text(json.dumps(doc))
                usage = Usage(srv.proc.pid, s.cpus)
                result = subprocess.run(
                    ["taskset", "-c", str(s.gen_cpu), "h2load", *flags,
                     "-n", str(n), "-d", str(body),
                     "-H", f"authorization: Bearer {users.app_secret}",
                     "-H", "content-type: application/json",
                     f"http://{srv.host}:{srv.port}/v1/messages"],
                    capture_output=True, text=True, timeout=600)
                usage.stop()
                if label == "batch":
                    out["batch.sent"] = _batch_sample(srv.host, srv.port, users.app_secret, body)
            if result.returncode != 0:
                raise BenchError(f"h2load failed: {result.stderr[-2000:]}")
            rate = re.search(r"finished in [0-9.]+m?s, ([0-9.]+) req/s", result.stdout)
            status = re.search(r"status codes: (\d+) 2xx", result.stdout)
            failed = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded,"
                               r" (\d+) failed", result.stdout)
            if rate is None or status is None or failed is None:
                raise BenchError(f"cannot read h2load's output:\n{result.stdout[-2000:]}")
            out[f"{label}.rate"] = float(rate[1])
            out[f"{label}.failed"] = float(failed[1])
            out[f"{label}.server_cpu"] = usage.server_pct
        out["batch.messages"] = out["batch.rate"] * BATCH
        return out


#: Messages per request in the batch run of `Rest`.
BATCH = 100


def _batch_sample(host: str, port: int, secret: str, body: Path) -> float:
    """How many messages of one more array the server answered SENT (h2load sees 200 only)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", "/v1/messages", body.read_bytes(),
                     {"authorization": f"Bearer {secret}", "content-type": "application/json"})
        doc = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return float(sum(1 for r in doc["results"] if r.get("status") == "SENT"))


# --- MariaDB beside SQLite (issue #5) ------------------------------------------------


class MariaDB:
    """Reliable throughput and latency on SQLite and on MariaDB, in the same run."""

    name = "mariadb"
    rows: ClassVar[list[Row]] = [
        Row("sqlite.received", "SQLite reliable: received msg/s"),
        Row("sqlite.delivered", "SQLite reliable: DELIVERED/s"),
        Row("sqlite.server_cpu", "SQLite reliable: server CPU %"),
        Row("mariadb.received", "MariaDB reliable: received msg/s", target=">= 15,000",
            ok=at_least(15_000)),
        Row("mariadb.delivered", "MariaDB reliable: DELIVERED/s", target=">= 15,000",
            ok=at_least(15_000)),
        Row("mariadb.failed", "MariaDB reliable: failure statuses"),
        Row("mariadb.server_cpu", "MariaDB reliable: server CPU %"),
        Row("mariadb.db_cpu", "MariaDB reliable: mariadbd CPU %"),
        Row("mariadb.other_cpu", "MariaDB reliable: other load on the 2 CPUs, %"),
        Row("sqlite_lat.p50", "SQLite reliable at the rate: p50 ms", "{:.2f}"),
        Row("sqlite_lat.p99", "SQLite reliable at the rate: p99 ms", "{:.2f}"),
        Row("mariadb_lat.p50", "MariaDB reliable at the rate: p50 ms", "{:.2f}"),
        Row("mariadb_lat.p99", "MariaDB reliable at the rate: p99 ms", "{:.2f}"),
        Row("mariadb_lat.p999", "MariaDB reliable at the rate: p99.9 ms", "{:.2f}"),
        Row("mariadb_lat.received", "MariaDB reliable at the rate: received msg/s"),
        Row("mariadb_lat.server_cpu", "MariaDB reliable at the rate: server CPU %"),
        Row("mariadb_lat.db_cpu", "MariaDB reliable at the rate: mariadbd CPU %"),
    ]

    def title(self, s: Settings) -> str:
        pinned = "not pinned" if s.db_cpu is None else f"on CPU {s.db_cpu}"
        return (f"mariadb: reliable throughput ({PAIRS} pairs, 200 un-SENT per sender) and"
                f" latency at {s.latency_rate:,} msg/s, SQLite then MariaDB (private server,"
                f" innodb_flush_log_at_trx_commit=1, mariadbd {pinned}); {s.warmup_s:g} s"
                f" warm-up + {s.measure_s:g} s measured")

    def users_needed(self, quick: bool) -> int:
        return 2 * PAIRS

    def run(self, s: Settings) -> dict[str, float]:
        out = _prefixed("sqlite", run_pairs(s, "throughput", "reliable", window=200))
        out.update(_prefixed("mariadb", run_pairs(s, "throughput", "reliable", window=200,
                                                  mariadb=True)))
        rate = s.latency_rate
        out.update(_prefixed("sqlite_lat", run_pairs(s, "latency", "reliable", rate=rate)))
        out.update(_prefixed("mariadb_lat", run_pairs(s, "latency", "reliable", rate=rate,
                                                      mariadb=True)))
        return out


SCENARIOS: dict[str, Scenario] = {
    sc.name: sc for sc in (Throughput(), Latency(), Memory(), Connect(), Sdk(), WebSocket(),
                           WsMemory(), Rest(), MariaDB())}
