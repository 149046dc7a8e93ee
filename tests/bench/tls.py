"""The `tls` scenario (issue 13): TLS 1.3 handshakes per second on the main port, one core.

The server (`tidings serve`, its default self-signed ECDSA P-256 certificate,
checked before each run) is pinned to the server CPU; `tlsgen.c`, compiled
here with gcc against the system's OpenSSL, runs on the generator CPU.  It
keeps 64 connections in flight, each a TCP connect, a TLS 1.3 handshake and
the wait for the server's first NewSessionTicket (sent only once the server
has verified the client's Finished: the server's side of the handshake is
done), then close_notify and close.  "full": no session offered (ECDHE X25519
+ ECDSA P-256 signature).  "resumed": every connection offers the newest
ticket (PSK with ECDHE, RFC 8446 §2.2); the table shows how many were really
resumed (`SSL_session_reused`).

Why C: on loopback, on one core, a TLS client costs about as much as the
server (OpenSSL 3.0's client side of a full handshake alone is ~350 µs of
CPU here), so a Python generator would measure itself.  Even tlsgen can be
the limit on full handshakes: the table shows the generator's CPU, the
server core's busy time (the server process plus the kernel's network work
on that CPU) and the *server core's capacity*: handshakes per second of
server core time, what one core does when the client side is not the limit.

Targets from the issue: >= 2,000 full and >= 5,000 resumed handshakes/s on
one server core.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.certs.selfsigned import CERT_NAME, KEY_NAME
from appliance.transport.tls import build_context
from tests.bench.harness import BenchError, Usage, cpu_busy, server
from tests.bench.report import Row, at_least
from tests.bench.scenarios import Settings, _prefixed, check_disturbance, warn

GENERATOR_SOURCE = Path(__file__).with_name("tlsgen.c")
CONCURRENCY = 64
#: Client source addresses 127.0.0.2...: TIME_WAIT stays far from the port range.
SOURCES = 16
MODES = (("full", "full"), ("resumed", "resume"))


def build_generator(root: Path) -> Path:
    """Compile tlsgen.c once per benchmark invocation (gcc, OpenSSL headers)."""
    binary = root / "tlsgen"
    if binary.exists():
        return binary
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise BenchError("the tls scenario needs gcc (apt-get install gcc libssl-dev)")
    result = subprocess.run([gcc, "-O2", "-Wall", "-o", str(binary), str(GENERATOR_SOURCE),
                             "-lssl", "-lcrypto"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"cannot build tlsgen (apt-get install libssl-dev?):\n{result.stderr}")
    return binary


def check_certificate(data_dir: Path) -> None:
    """The server's certificate must be the default ECDSA P-256 one: what the targets assume."""
    cert = x509.load_pem_x509_certificate((data_dir / "tls" / CERT_NAME).read_bytes())
    key = cert.public_key()
    if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
        raise BenchError(f"the server's certificate has a {type(key).__name__} key, not P-256")


def openssl_alone(data_dir: Path, resume: bool, cpu: int, count: int = 2_000) -> float:
    """CPU µs of the server's side of one handshake in OpenSSL alone: the server's own
    context (`build_context`), memory BIOs, no sockets, no event loop, in this process
    pinned to the server's CPU (the server has stopped).  The floor of `server_us`."""
    server_ctx = build_context(data_dir / "tls" / CERT_NAME, data_dir / "tls" / KEY_NAME)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3

    def one(session: ssl.SSLSession | None) -> tuple[float, ssl.SSLSession | None]:
        s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
        client = client_ctx.wrap_bio(c_in, c_out, session=session)
        spent = 0.0
        started = time.process_time()
        srv = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        spent += time.process_time() - started
        for _ in range(3):  # ClientHello, Finished (+ tickets out), then done
            with contextlib.suppress(ssl.SSLWantReadError):
                client.do_handshake()
            s_in.write(c_out.read())
            started = time.process_time()
            with contextlib.suppress(ssl.SSLWantReadError):
                srv.do_handshake()
            c_in.write(s_out.read())
            spent += time.process_time() - started
        with contextlib.suppress(ssl.SSLWantReadError):
            client.read(1)  # takes the tickets in
        if session is not None and not client.session_reused:
            raise BenchError("OpenSSL alone: the session was not resumed")
        return spent, client.session

    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        _, session = one(None)
        total = 0.0
        for _ in range(count):
            spent, fresh = one(session if resume else None)
            total += spent
            session = fresh or session
    finally:
        os.sched_setaffinity(0, affinity)
    return 1e6 * total / count


class TlsHandshakes:
    name = "tls"
    rows: ClassVar[list[Row]] = [
        Row("full.rate", "full: handshakes/s", target=">= 2,000", ok=at_least(2_000)),
        Row("full.capacity", "full: server core capacity, handshakes/s of core time"),
        Row("full.server_us", "full: server process CPU per handshake, us", "{:,.0f}"),
        Row("full.openssl_us", "full: of which OpenSSL alone (memory BIOs), us", "{:,.0f}"),
        Row("full.server_cpu", "full: server process CPU %"),
        Row("full.core_busy", "full: server core busy % (process + kernel)"),
        Row("full.gen_cpu", "full: generator CPU %"),
        Row("full.p50", "full: connect to ticket p50 ms", "{:.1f}"),
        Row("full.p99", "full: connect to ticket p99 ms", "{:.1f}"),
        Row("full.reused", "full: resumed (must be 0)"),
        Row("full.failed", "full: failed connections"),
        Row("resumed.rate", "resumed: handshakes/s", target=">= 5,000", ok=at_least(5_000)),
        Row("resumed.capacity", "resumed: server core capacity, handshakes/s of core time"),
        Row("resumed.server_us", "resumed: server process CPU per handshake, us", "{:,.0f}"),
        Row("resumed.openssl_us", "resumed: of which OpenSSL alone (memory BIOs), us", "{:,.0f}"),
        Row("resumed.server_cpu", "resumed: server process CPU %"),
        Row("resumed.core_busy", "resumed: server core busy % (process + kernel)"),
        Row("resumed.gen_cpu", "resumed: generator CPU %"),
        Row("resumed.p50", "resumed: connect to ticket p50 ms", "{:.1f}"),
        Row("resumed.p99", "resumed: connect to ticket p99 ms", "{:.1f}"),
        Row("resumed.reused_pct", "resumed: really resumed, %", "{:.1f}", target="100"),
        Row("resumed.failed", "resumed: failed connections"),
    ]

    def title(self, s: Settings) -> str:
        return (f"tls: TLS 1.3 handshakes/s on the main port (ECDSA P-256 self-signed, X25519),"
                f" {CONCURRENCY} connections in flight from tlsgen (C, OpenSSL) on CPU {s.gen_cpu},"
                f" server on CPU {s.server_cpu}; each connection: connect, handshake, first"
                f" session ticket, close_notify; {s.warmup_s:g} s warm-up + {s.measure_s:g} s"
                " measured")

    def users_needed(self, quick: bool) -> int:
        return 0

    def run(self, s: Settings) -> dict[str, float]:
        binary = build_generator(s.root)
        out: dict[str, float] = {}
        for label, mode in MODES:
            s.settle()
            with s.template().fresh_copy(s.root) as run_dir:
                with server(run_dir / "data", s.server_cpu) as srv:
                    assert srv.proc is not None
                    check_certificate(run_dir / "data")
                    figures = self._measure(s, binary, srv.host, srv.port, srv.proc.pid, mode)
                figures["openssl_us"] = openssl_alone(run_dir / "data", mode == "resume",
                                                      s.server_cpu)
            out.update(_prefixed(label, figures))
            self._explain(label, figures)
        out["resumed.reused_pct"] = 100 * out["resumed.reused"] / max(1.0, out["resumed.done"])
        if out["full.reused"]:
            warn(f"full: {out['full.reused']:.0f} connections were resumed")
        for label, _mode in MODES:
            if out[f"{label}.failed"]:
                warn(f"{label}: {out[f'{label}.failed']:.0f} connections failed")
        return out

    def _measure(self, s: Settings, binary: Path, host: str, port: int, pid: int,
                 mode: str) -> dict[str, float]:
        gens = max(1, s.generators)
        procs = [_Generator([str(binary), host, str(port), mode, str(max(1, CONCURRENCY // gens)),
                             str(s.warmup_s), str(s.measure_s), str(SOURCES)], s.gen_cpu)
                 for _ in range(gens)]
        try:
            for proc in procs:  # every generator has opened its window
                proc.expect("measuring", 30 + s.warmup_s)
            usage = Usage(pid, s.cpus)
            core0 = cpu_busy((s.server_cpu,))[0]
            results = [proc.expect("result", 30 + s.measure_s) for proc in procs]
            usage.stop()
            core_busy_s = cpu_busy((s.server_cpu,))[0] - core0
        finally:
            for proc in procs:
                proc.stop()
        done = sum(r["done"] for r in results)
        gen_cpu_s = sum(r["cpu_s"] for r in results)
        seconds = s.measure_s
        check_disturbance(s, f"tls/{mode}", usage.other_pct(gen_cpu_s),
                          usage.steal_s / usage.seconds * 100, other_limit=30.0)
        return {
            "rate": done / seconds,
            "done": float(done),
            "reused": float(sum(r["reused"] for r in results)),
            "failed": float(sum(r["failed"] for r in results)),
            "server_cpu": usage.server_pct,
            "server_us": 1e6 * usage.server_s / max(1, done),
            "core_busy": 100 * core_busy_s / usage.seconds,
            "capacity": done / core_busy_s if core_busy_s else 0.0,
            "gen_cpu": 100 * gen_cpu_s / seconds,
            "p50": max(r["p50_ms"] for r in results),
            "p99": max(r["p99_ms"] for r in results),
        }

    @staticmethod
    def _explain(label: str, f: dict[str, float]) -> None:
        """Say which side bounded the rate: the figures alone are easy to misread."""
        if f["gen_cpu"] >= 90 and f["core_busy"] < 90:
            bound = (f"the generator (CPU {f['gen_cpu']:.0f}%) bounded it; the server core was"
                     f" {f['core_busy']:.0f}% busy: one core does ~{f['capacity']:,.0f}/s")
        elif f["core_busy"] >= 90:
            bound = f"the server core ({f['core_busy']:.0f}% busy) bounded it"
        else:
            bound = "neither CPU was saturated (latency-bound: raise the concurrency)"
        print(f"  {label}: {f['rate']:,.0f} handshakes/s; {bound}", flush=True)


class _Generator:
    """One tlsgen process pinned to `cpu`; its JSON lines are read by a thread."""

    def __init__(self, argv: list[str], cpu: int) -> None:
        self.proc = subprocess.Popen(["taskset", "-c", str(cpu), *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        """The next line, which must be `event` (tlsgen prints "measuring", then "result")."""
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise BenchError(f"tlsgen: no {event!r} within {timeout_s:.0f} s") from None
        try:
            message: dict[str, Any] = json.loads(line or "")
        except json.JSONDecodeError:
            message = {}
        if message.get("event") != event:
            self.stop()
            stderr = self.proc.stderr.read() if self.proc.stderr is not None else ""
            raise BenchError(f"tlsgen: expected {event!r}, got {line!r} (exit"
                             f" {self.proc.returncode})\n{stderr[-2000:]}")
        return message

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()
