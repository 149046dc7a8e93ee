"""The `acme` scenario (issue 13): from starting `tidings serve` to its first trusted certificate.

Each start is a real child process, ``python -m appliance --config ... serve
--port <pebble.tls_port>`` (the main port where pebble's VA connects for
TLS-ALPN-01, as 443 would be), configured with one hostname and the real
pebble CA (`tests/support/pebble.py`, ``PEBBLE_VA_NOSLEEP``) as its only
issuer.  From the moment the process is spawned, a client in this process
tries a TLS handshake every 20 ms: Python's `ssl` with pebble's root as the
only trust anchor and ``server_hostname`` set, so a handshake succeeds only
once the server serves a certificate chaining to that root for the name (the
self-signed certificate served until then fails verification).  The first
success is the figure; ``openssl s_client -verify_return_error`` then checks
the same chain once (not timed).

Every first start has a new data directory: a new ACME account key, so the
figure includes the account's registration (RFC 8555 §7.3) and pebble has no
valid authorization to reuse.  Rows:

- tls-alpn-01 (no plain-HTTP port) and http-01 (``redirect_port`` = pebble's
  ``httpPort``), each with pebble refusing no nonces and with pebble's default
  5 % of good nonces refused as badNonce (each costs a retry, RFC 8555 §6.5);
- restart: the tls-alpn-01 server stopped and started again on the same data
  directory, until the stored certificate is served.

The split comes from the server's own log lines (wall-clock timestamps, ms
resolution; this process reads the same clock): listening, order placed,
account registered, hostnames validated, certificate installed.
``check_interval_s`` keeps its default (10 s): the first check runs at start.
The server is not pinned to a CPU (pebble is a process of its own too): this
is a latency, not a throughput.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from tests.bench.harness import ROOT, BenchError, cpu_seconds
from tests.bench.report import Row
from tests.bench.scenarios import Settings, _prefixed, warn
from tests.certs.live import HOSTNAME, acme_toml
from tests.support.pebble import Pebble, PebbleError
from tests.support.server import ServerProcess

#: Between the end of one handshake attempt and the start of the next.
POLL_S = 0.02
#: A start that has not served a trusted certificate by then failed.
TRUSTED_TIMEOUT_S = 60.0
#: (row prefix, label, challenge, PEBBLE_WFE_NONCEREJECT: None = pebble's default, 5 %)
VARIANTS = (
    ("alpn", "tls-alpn-01", "tls-alpn-01", 0),
    ("alpn_nonce", "tls-alpn-01, 5% badNonce", "tls-alpn-01", None),
    ("http", "http-01", "http-01", 0),
    ("http_nonce", "http-01, 5% badNonce", "http-01", None),
)
#: The server's log lines that mark the phases (the message after "name: ").
EVENTS = {
    "order": "ordering a certificate for",
    "account": "ACME account at",
    "validated": "validated ",
    "installed": "serving the certificate for",
}
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) [A-Z]+ [\w.]+: (.*)$", re.M)


def _first_start_rows(prefix: str, label: str) -> list[Row]:
    return [
        Row(f"{prefix}.trusted", f"{label}: spawn -> first trusted handshake, s", "{:.2f}"),
        Row(f"{prefix}.listening", f"{label}:   spawn -> listening line, s", "{:.2f}"),
        Row(f"{prefix}.to_order", f"{label}:   listening -> order started (log), s", "{:.3f}"),
        Row(f"{prefix}.account", f"{label}:   account registration (log), s", "{:.3f}"),
        Row(f"{prefix}.validation", f"{label}:   order + challenge + validation (log), s",
            "{:.3f}"),
        Row(f"{prefix}.finalize", f"{label}:   finalize + download + save + install (log), s",
            "{:.3f}"),
        Row(f"{prefix}.seen", f"{label}:   installed (log) -> trusted handshake, s", "{:.3f}"),
        Row(f"{prefix}.server_cpu", f"{label}: server CPU until trusted, s", "{:.2f}"),
        Row(f"{prefix}.untrusted", f"{label}: handshakes refused (self-signed served)"),
    ]


class AcmeFirstCertificate:
    name = "acme"
    rows: ClassVar[list[Row]] = [
        *(row for prefix, label, _c, _n in VARIANTS for row in _first_start_rows(prefix, label)),
        Row("restart.trusted", "restart (stored certificate): spawn -> trusted handshake, s",
            "{:.2f}"),
        Row("restart.listening", "restart:   spawn -> listening line, s", "{:.2f}"),
        Row("restart.installed", "restart:   spawn -> stored certificate installed (log), s",
            "{:.2f}"),
        Row("restart.untrusted", "restart: handshakes refused (self-signed served)"),
    ]

    def title(self, s: Settings) -> str:
        return ("acme: `tidings serve` spawn -> first handshake verified against pebble's root"
                " (one hostname, pebble with PEBBLE_VA_NOSLEEP, fresh data dir and ACME account"
                f" per first start, a handshake tried every {POLL_S * 1000:.0f} ms; server not"
                " pinned)")

    def users_needed(self, quick: bool) -> int:
        return 0

    def run(self, s: Settings) -> dict[str, float]:
        out: dict[str, float] = {}
        run_dir = Path(tempfile.mkdtemp(prefix="acme-", dir=s.root))
        try:
            for nonce_reject in (0, None):
                with _pebble(run_dir, nonce_reject) as pebble:
                    roots = run_dir / f"roots-{pebble.acme_port}.pem"
                    roots.write_text(pebble.roots_pem())
                    for prefix, label, challenge, reject in VARIANTS:
                        if reject != nonce_reject:
                            continue
                        data_dir = run_dir / prefix / "data"
                        data_dir.mkdir(parents=True)
                        config = _config(run_dir / prefix, pebble, challenge)
                        s.settle()
                        start = timed_start(config, data_dir, pebble, roots)
                        figures = start.first_start_figures()
                        out.update(_prefixed(prefix, figures))
                        print(f"  {label}: trusted after {figures['trusted']:.2f} s", flush=True)
                        if prefix == "alpn":  # the same data dir again: the stored certificate
                            s.settle()
                            again = timed_start(config, data_dir, pebble, roots)
                            out.update(_prefixed("restart", again.restart_figures()))
                            if "ordering a certificate" in again.output:
                                warn("restart: the server placed a new order")
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        return out


@contextlib.contextmanager
def _pebble(run_dir: Path, nonce_reject: int | None) -> Iterator[Pebble]:
    # PEBBLE_VA_NOSLEEP (the fixture's default): a random 0-15 s VA sleep would be the figure.
    pebble = Pebble(run_dir / f"pebble-{nonce_reject}", nosleep=True, nonce_reject=nonce_reject)
    try:
        pebble.start()
    except PebbleError as exc:
        pebble.close()
        raise BenchError(str(exc)) from None
    try:
        yield pebble
    finally:
        pebble.close()


def _config(directory: Path, pebble: Pebble, challenge: str) -> Path:
    """The live tests' configuration with `check_interval_s` at its default (10 s)."""
    toml = acme_toml(pebble, challenge=challenge, redirect=challenge == "http-01")
    lines = [line for line in toml.splitlines() if not line.startswith("check_interval_s")]
    if len(lines) == len(toml.splitlines()):
        raise BenchError("acme_toml() no longer sets check_interval_s: review the benchmark")
    path = directory / "tidings.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Start:
    """One timed start of `tidings serve`."""

    spawn_wall: float  # time.time() at spawn
    listening_s: float = 0.0
    trusted_s: float = 0.0
    server_cpu_s: float = 0.0
    refused: int = 0  # connection refused: not listening yet
    untrusted: int = 0  # the chain did not verify: the self-signed certificate
    other_errors: list[str] = field(default_factory=list)
    output: str = ""

    def event_s(self, event: str) -> float:
        """Seconds from spawn to the server's first log line of `event` (its timestamp)."""
        needle = EVENTS[event]
        for match in _LOG_LINE.finditer(self.output):
            if match[2].startswith(needle):
                stamp = dt.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f")
                return stamp.timestamp() - self.spawn_wall  # local time, as the server logs
        raise BenchError(f"the server never logged {needle!r}:\n{self.output[-3000:]}")

    def first_start_figures(self) -> dict[str, float]:
        order, account = self.event_s("order"), self.event_s("account")
        installed = self.event_s("installed")
        try:
            validated = self.event_s("validated")
        except BenchError:  # a server without that log line: no split of the order
            validated = float("nan")
        figures = {
            "trusted": self.trusted_s,
            "listening": self.listening_s,
            "to_order": order - self.listening_s,
            "account": account - order,
            "validation": validated - account,
            "finalize": installed - validated,
            "seen": self.trusted_s - installed,
            "server_cpu": self.server_cpu_s,
            "untrusted": float(self.untrusted),
        }
        return {k: v for k, v in figures.items() if v == v}  # drop NaN

    def restart_figures(self) -> dict[str, float]:
        return {"trusted": self.trusted_s, "listening": self.listening_s,
                "installed": self.event_s("installed"), "untrusted": float(self.untrusted)}


def timed_start(config: Path, data_dir: Path, pebble: Pebble, roots: Path) -> Start:
    """Spawn the server, time its listening line and its first trusted handshake."""
    server = ServerProcess(data_dir, command=[sys.executable, "-m", "appliance", "--config",
                                              str(config)],
                           env={"PYTHONPATH": os.pathsep.join(
                               filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    context = ssl.create_default_context(cafile=str(roots))  # pebble's root, nothing else
    done = threading.Event()
    # Wall clock, as the server's log timestamps it is compared with.
    start = Start(time.time())  # noqa: TID251
    t0 = time.monotonic()
    poller = threading.Thread(target=_poll_handshakes, daemon=True,
                              args=(pebble.tls_port, context, start, t0, server, done))
    poller.start()
    try:
        with _watchdog(server, 30.0):
            server.start(port=pebble.tls_port)
        start.listening_s = time.monotonic() - t0
        if not done.wait(TRUSTED_TIMEOUT_S) or not start.trusted_s:
            raise BenchError(f"no trusted certificate within {TRUSTED_TIMEOUT_S:.0f} s"
                             f" ({start.untrusted} untrusted handshakes, other errors:"
                             f" {start.other_errors[-3:]}):\n{server.output[-3000:]}\n"
                             f"{pebble.log()[-3000:]}")
        assert server.proc is not None
        start.server_cpu_s = cpu_seconds(server.proc.pid)
        _openssl_verify(pebble.tls_port, roots)
    finally:
        done.set()
        code = server.stop(timeout=20.0) if server.proc is not None else 0
        poller.join(timeout=10)
        start.output = server.output
    if code != 0:
        raise BenchError(f"the server exited with {code}:\n{start.output[-3000:]}")
    return start


@contextlib.contextmanager
def _watchdog(server: ServerProcess, timeout_s: float) -> Iterator[None]:
    """`ServerProcess.start` blocks on the server's stdout: kill it if it never listens."""
    def fire() -> None:
        if server.proc is not None and server.proc.poll() is None and not server.port:
            server.proc.kill()

    timer = threading.Timer(timeout_s, fire)
    timer.start()
    try:
        yield
    except RuntimeError as exc:  # exited before listening
        raise BenchError(str(exc)) from None
    finally:
        timer.cancel()


def _poll_handshakes(port: int, context: ssl.SSLContext, start: Start, t0: float,
                     server: ServerProcess, done: threading.Event) -> None:
    """Try a verified handshake every POLL_S until one succeeds (or `done` is set)."""
    while not done.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock, \
                    context.wrap_socket(sock, server_hostname=HOSTNAME):
                start.trusted_s = time.monotonic() - t0
                done.set()
                return
        except ConnectionRefusedError:
            start.refused += 1
        except ssl.SSLCertVerificationError:
            start.untrusted += 1
        except (OSError, ssl.SSLError) as exc:
            start.other_errors.append(repr(exc))
        if server.proc is not None and server.proc.poll() is not None:
            done.set()  # it died: timed_start reports it
            return
        time.sleep(POLL_S)


def _openssl_verify(port: int, roots: Path) -> None:
    """The chain verified by Python's ssl verifies with openssl too (not timed)."""
    if shutil.which("openssl") is None:
        return
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOSTNAME,
         "-verify_hostname", HOSTNAME, "-CAfile", str(roots), "-verify_return_error"],
        input="", capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0 or "Verify return code: 0 (ok)" not in result.stdout:
        raise BenchError(f"openssl s_client did not verify the served chain:\n"
                         f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
