"""The processes of one benchmark run and how their figures are read.

The server runs pinned to one CPU (``taskset -c 0``), every load generator to
another (``taskset -c 1``).  Everything started here is stopped in a
``finally``: SIGTERM, then SIGKILL if it does not go within its deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_NS = 1_000_000_000


class BenchError(RuntimeError):
    """A run could not produce its figures (a process failed or timed out)."""


# --- /proc readings ---------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime: fields 14, 15


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid`, from VmRSS in /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_busy(cpus: tuple[int, ...]) -> tuple[float, float]:
    """Seconds CPUs `cpus` were busy, and of those stolen, since boot (/proc/stat).

    Busy counts user, nice, system, irq, softirq and steal: time the
    hypervisor gave to another guest, during which nothing here ran.
    """
    busy = stolen = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
            busy += user + nice + system + irq + softirq + steal
            stolen += steal
    return busy / _CLK_TCK, stolen / _CLK_TCK


def wait_quiet(cpus: tuple[int, ...], limit_s: float, busy_pct: float = 15.0) -> float:
    """Wait until `cpus` are idle enough (a shared machine); return the busy % last seen.

    Gives up after `limit_s` seconds: the run then goes ahead and its
    "other load" figure tells how disturbed it was.
    """
    deadline = time.monotonic() + limit_s
    while True:
        before = cpu_busy(cpus)[0]
        time.sleep(0.5)
        pct = 100 * (cpu_busy(cpus)[0] - before) / 0.5 / len(cpus)
        if pct <= busy_pct or time.monotonic() >= deadline:
            return pct


class Usage:
    """CPU use over an interval: the server process, and everything on the benchmark CPUs.

    What the benchmark CPUs did beyond the server and the generators is load
    from other processes (or kernel work such as loopback softirqs): when it is
    large, the figures of that run are disturbed.
    """

    def __init__(self, pid: int, cpus: tuple[int, ...], database_pid: int | None = None) -> None:
        self.pid = pid
        self.cpus = cpus
        #: The database server's process (MariaDB runs): part of the system under test.
        self.database_pid = database_pid
        self.t0 = time.monotonic_ns()
        self.server0 = cpu_seconds(pid)
        self.database0 = cpu_seconds(database_pid) if database_pid else 0.0
        self.busy0, self.steal0 = cpu_busy(cpus)
        self.seconds = self.server_s = self.database_s = self.busy_s = self.steal_s = 0.0

    def stop(self) -> Usage:
        self.seconds = (time.monotonic_ns() - self.t0) / _NS
        self.server_s = cpu_seconds(self.pid) - self.server0
        if self.database_pid:
            self.database_s = cpu_seconds(self.database_pid) - self.database0
        busy, steal = cpu_busy(self.cpus)
        self.busy_s = busy - self.busy0
        self.steal_s = steal - self.steal0
        return self

    @property
    def server_pct(self) -> float:
        return 100 * self.server_s / self.seconds

    @property
    def database_pct(self) -> float:
        return 100 * self.database_s / self.seconds

    def other_pct(self, generator_cpu_s: float) -> float:
        """Busy % of the benchmark CPUs not spent by the server, its database or the generators."""
        return max(0.0, 100 * (self.busy_s - self.server_s - self.database_s - generator_cpu_s)
                   / self.seconds)


def sleep_until(t_ns: int) -> None:
    delay = (t_ns - time.monotonic_ns()) / _NS
    if delay > 0:
        time.sleep(delay)


# --- the server -----------------------------------------------------------------------


#: The benchmark's own traffic (hundreds of connections per 127.0.0.x source, thousands
#: a second) is not an attack: the per-address limits are off for it, as before the
#: edge had them.  The `edge` scenario measures them on.
EDGE_OFF = '[edge]\nexempt = ["127.0.0.0/8", "::1/128"]\n'


@contextlib.contextmanager
def server(data_dir: Path, cpu: int, *, stub: bool = False, edge: str = EDGE_OFF,
           extra: str = "") -> Iterator[ServerProcess]:
    """`tidings serve --port 0` on a fresh data dir, pinned to `cpu` (or the stub server);
    `edge` is the ``[edge]`` table it runs with, `extra` more TOML tables (``[media]``)."""
    module = "tests.bench.stub_server" if stub else "appliance"
    config: list[str] = []
    if not stub:
        path = data_dir.parent / "edge.toml"
        path.write_text(edge + extra)
        config = ["--config", str(path)]
    srv = ServerProcess(data_dir, command=["taskset", "-c", str(cpu), sys.executable, "-m",
                                           module, *config],
                        env={"PYTHONPATH": os.pathsep.join(
                            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})

    def watchdog() -> None:  # start() blocks on the server's stdout: bound it
        if srv.proc is not None and srv.proc.poll() is None and not srv.port:
            srv.proc.kill()

    timer = threading.Timer(30.0, watchdog)
    timer.start()
    profiler = None
    try:
        try:
            srv.start()
        finally:
            timer.cancel()
        profiler = _profile(srv.proc.pid) if srv.proc is not None and not stub else None
        yield srv
    finally:
        if srv.proc is not None:
            srv.stop(timeout=20.0)
        if profiler is not None:
            profiler.wait(timeout=20.0)


def _profile(pid: int) -> subprocess.Popen[bytes] | None:
    """With BENCH_PROFILE=DIR, py-spy samples the server into DIR (a tool for us, not a figure)."""
    out = os.environ.get("BENCH_PROFILE")
    if not out:
        return None
    Path(out).mkdir(parents=True, exist_ok=True)
    target = Path(out) / f"server-{pid}.txt"
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    extra = os.environ.get("BENCH_PROFILE_ARGS", "").split()  # e.g. --native
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw",
                             "--threads", "--rate", "250", *extra, "-o", str(target)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- load generators ------------------------------------------------------------------


class Generator:
    """One `python -m tests.bench.loadgen` child pinned to `cpu` (see loadgen.py)."""

    def __init__(self, spec: dict[str, Any], workdir: Path, index: int, cpu: int) -> None:
        self.name = f"generator {index}"
        spec_path = workdir / f"gen{index}.json"
        spec_path.write_text(json.dumps(spec))
        self.stderr_path = workdir / f"gen{index}.stderr"
        self._stderr: IO[str] = self.stderr_path.open("w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                           os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), sys.executable, "-m", "tests.bench.loadgen",
             str(spec_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            cwd=ROOT, env=env)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _failure(self, what: str) -> BenchError:
        self._stderr.flush()
        tail = self.stderr_path.read_text()[-2000:] if self.stderr_path.exists() else ""
        return BenchError(f"{self.name}: {what}\n{tail}".rstrip())

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next message of kind `event` (other kinds are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise self._failure(f"no {event!r} within {timeout:.0f} s") from None
            if line is None:
                raise self._failure(f"exited ({self.proc.wait()}) before {event!r}")
            try:
                msg: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                continue  # stray output
            if msg.get("event") == "error":
                raise self._failure(f"{msg['message']}\n{msg.get('traceback', '')}")
            if msg.get("event") == event:
                return msg

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise self._failure(f"cannot write to it: {exc}") from None

    def finish(self, timeout: float = 20.0) -> dict[str, Any] | None:
        """Tell it to stop; returns its goodbye message (or None); kills it if it lingers."""
        with contextlib.suppress(BenchError):
            self.send("stop")
        try:
            bye = self.expect("bye", timeout)
        except BenchError:
            bye = None
        self.kill(timeout=5.0)
        return bye

    def kill(self, timeout: float = 0.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError, BrokenPipeError):
                if stream is not None:
                    stream.close()
        self._reader.join(timeout=5)
        self._stderr.close()


@contextlib.contextmanager
def generators(specs: list[dict[str, Any]], workdir: Path, cpu: int,
               first: int = 0) -> Iterator[list[Generator]]:
    """Start one generator per spec (numbered from `first`); kill what is left on the way out."""
    gens: list[Generator] = []
    try:
        for i, spec in enumerate(specs, first):
            gens.append(Generator(spec, workdir, i, cpu))
        yield gens
    finally:
        for g in gens:
            g.kill()


def start_together(gens: list[Generator], delay_s: float = 0.3) -> int:
    """Send every generator the same start time; return it (CLOCK_MONOTONIC ns)."""
    t0 = time.monotonic_ns() + int(delay_s * _NS)
    for g in gens:
        g.send(f"go {t0}")
    return t0


# --- MariaDB ----------------------------------------------------------------------


class BenchMariaDB:
    """The tests' MariaDB server (`tests.support.mariadb`), for the benchmark.

    Each run gets a new database, filled from the template data directory by
    `tidings db copy`, the operator's way from SQLite to MariaDB.
    """

    def __init__(self, root: Path, cpu: int | None) -> None:
        from tests.support.mariadb import MariaDBServer

        self.database = MariaDBServer(root)
        self.database.start()
        proc = self.database.server.proc
        assert proc is not None
        self.pid = proc.pid
        if cpu is not None:
            # Every thread: mariadbd started its workers before we got here,
            # and a thread keeps the affinity it was created with.
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                os.sched_setaffinity(int(tid), {cpu})

    def prepare(self, data_dir: Path) -> None:
        """Copy `data_dir`'s SQLite store into a new database and switch it there."""
        url = self.database.database("bench").url()
        subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(data_dir), "db",
                        "copy", "--to", url], capture_output=True, text=True, check=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})

    def stop(self) -> None:
        self.database.stop()


# --- data directories -------------------------------------------------------------


class Users:
    """A template data directory with users u00000, u00001, ... and one token each."""

    def __init__(self, root: Path, count: int) -> None:
        from tests.support.provision import provision

        self.dir = root / "template"
        self.dir.mkdir()
        self.addresses = [f"u{i:05d}" for i in range(count)]
        tokens, _ = provision(self.dir, self.addresses, token_ttl_s=86_400)
        self.tokens = [tokens[a] for a in self.addresses]
        self.app_secret = subprocess.run(
            [sys.executable, "-m", "appliance", "--data-dir", str(self.dir), "app", "secret"],
            capture_output=True, text=True, check=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.strip()

    @contextlib.contextmanager
    def fresh_copy(self, root: Path) -> Iterator[Path]:
        """A run directory holding a fresh copy of the template as ``data/``."""
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=root))
        try:
            shutil.copytree(self.dir, run_dir / "data")
            yield run_dir
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
