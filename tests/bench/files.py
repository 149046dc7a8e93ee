"""The `files` scenario (issue 15): upload and download MB/s; RSS during a 2 GiB upload.

One server (`tidings serve`, a ``[media]`` table allowing 4 GiB files) pinned
to the server CPU; every client (curl, h2load) pinned to the generator CPU,
one transfer at a time:

- the server's RSS when idle (after a 1 MiB upload and download have loaded
  the code paths), its peak while curl uploads a 2 GiB file over HTTP/1.1
  (``/proc/<pid>/status`` VmRSS sampled every 50 ms in a thread), and 1 s
  after the upload was answered;
- uploads of a 1 GiB file: ``POST /v1/files`` (curl ``-T``: streamed from the
  file, ``--data-binary @`` would read 1 GiB into curl's memory first) and a
  tus upload (one ``PATCH`` of the whole file) over HTTP/1.1 and HTTP/2 (prior
  knowledge), and POST inside TLS (the server's self-signed certificate, ``-k``);
  every answer's SHA-256 is checked against the file's;
- downloads of that file with curl over HTTP/1.1 and HTTP/2, in clear and inside
  TLS; with h2load (HTTP/2, 2^30-byte windows), and 4 at once on 4 connections
  (h2load, HTTP/2 and HTTP/1.1); every length and status checked.

MB/s is 10^6 bytes per second of curl's ``time_total`` or h2load's "finished
in" (an upload's includes the server's fsync and the answer).  Each transfer
also shows the server's CPU % (one core: 100 % means the server is the limit)
and the client's.  The
uploaded files are content-addressed: the same bytes are stored once, but each
upload writes and hashes them again.

Targets from the issue: downloads >= 300 MB/s with the server on one core; RSS
during the 2 GiB upload < 64 MiB above idle.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tests.bench.harness import BenchError, Usage, rss_bytes, server
from tests.bench.report import Row, at_least, at_most
from tests.bench.scenarios import Settings, check_disturbance
from tests.support.bigfile import write_blocks
from tests.support.hostile import RssWatch

MIB = 1 << 20
MEDIA = "[media]\nmax_file_bytes = 4294967296\nmax_app_bytes = 1099511627776\n"
TARGET_MB_S = 300.0
RSS_GROWTH_MIB = 64.0
CLIENT_TIMEOUT_S = 600.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_TUS = ["-H", "Tus-Resumable: 1.0.0", "-H", "Content-Type: application/offset+octet-stream",
        "-H", "Upload-Offset: 0"]


@dataclass(frozen=True)
class Transfer:
    key: str
    label: str
    kind: str  # "post", "tus" or "get"
    client: str  # "curl" or "h2load"
    version: str  # "1.1" or "2"
    tls: bool
    #: h2load: connections, and downloads per connection (one after another).
    connections: int = 1
    per_connection: int = 1


UPLOADS = [Transfer("up.h1", "upload POST HTTP/1.1", "post", "curl", "1.1", False),
           Transfer("up.h2", "upload POST HTTP/2", "post", "curl", "2", False),
           Transfer("up.h1s", "upload POST HTTP/1.1 + TLS", "post", "curl", "1.1", True),
           Transfer("up.h2s", "upload POST HTTP/2 + TLS", "post", "curl", "2", True),
           Transfer("tus.h1", "upload tus PATCH HTTP/1.1", "tus", "curl", "1.1", False),
           Transfer("tus.h2", "upload tus PATCH HTTP/2", "tus", "curl", "2", False)]
DOWNLOADS = [Transfer("dl.h1", "download HTTP/1.1", "get", "curl", "1.1", False),
             Transfer("dl.h2", "download HTTP/2", "get", "curl", "2", False),
             Transfer("dl.h1s", "download HTTP/1.1 + TLS", "get", "curl", "1.1", True),
             Transfer("dl.h2s", "download HTTP/2 + TLS", "get", "curl", "2", True),
             Transfer("dl.ld", "download HTTP/2 (h2load)", "get", "h2load", "2", False),
             Transfer("dl.lds", "download HTTP/2 + TLS (h2load)", "get", "h2load", "2", True),
             Transfer("dl.ld4", "4 downloads at once, HTTP/2 (h2load -c 4)", "get", "h2load",
                      "2", False, connections=4, per_connection=1),
             Transfer("dl.ld4h1", "4 downloads at once, HTTP/1.1 (h2load --h1 -c 4)", "get",
                      "h2load", "1.1", False, connections=4, per_connection=1)]


def _rows() -> list[Row]:
    rows = [Row("rss.idle", "server RSS idle, MiB", "{:.1f}"),
            Row("rss.peak", "server RSS peak during the big upload, MiB", "{:.1f}"),
            Row("rss.growth", "  peak - idle, MiB", "{:.1f}", f"< {RSS_GROWTH_MIB:.0f}",
                at_most(RSS_GROWTH_MIB)),
            Row("rss.after", "server RSS 1 s after it, MiB", "{:.1f}"),
            Row("big.rate", "the big upload (POST HTTP/1.1), MB/s"),
            Row("big.server_cpu", "  server CPU %")]
    for t in UPLOADS + DOWNLOADS:
        target = f">= {TARGET_MB_S:.0f}" if t.kind == "get" else ""
        rows += [Row(f"{t.key}.rate", f"{t.label}, MB/s", "{:,.0f}", target,
                     at_least(TARGET_MB_S) if target else None),
                 Row(f"{t.key}.server_cpu", "  server CPU %"),
                 Row(f"{t.key}.client_cpu", f"  {t.client} CPU %")]
    return rows


@dataclass
class Figures:
    """One transfer as measured."""

    seconds: float
    server_cpu: float
    client_cpu: float
    stdout: str


class Files:
    name = "files"
    rows: ClassVar[list[Row]] = _rows()

    def title(self, s: Settings) -> str:
        one, two = self.sizes_mib(s.quick)
        return (f"files: {one} MiB uploads (POST, tus PATCH) and downloads with curl and h2load,"
                f" HTTP/1.1 and HTTP/2, clear and TLS; server RSS during a {two} MiB HTTP/1.1"
                " upload (50 ms samples); one client at a time, MB = 10^6 bytes")

    @staticmethod
    def sizes_mib(quick: bool) -> tuple[int, int]:
        return (256, 512) if quick else (1024, 2048)

    def users_needed(self, quick: bool) -> int:
        return 1

    def run(self, s: Settings) -> dict[str, float]:
        users = s.template()
        one, two = self.sizes_mib(s.quick)
        small, source, big = (s.root / f"files-{mib}.bin" for mib in (1, one, two))
        digests = {path: _ensure(path, mib) for path, mib in ((small, 1), (source, one),
                                                               (big, two))}
        out: dict[str, float] = {}
        s.settle()
        with users.fresh_copy(s.root) as run_dir, \
                server(run_dir / "data", s.server_cpu, extra=MEDIA) as srv:
            assert srv.proc is not None
            run = _Run(s, srv.proc.pid, srv.host, srv.port, users.tokens[0], run_dir)
            # Warm-up: the code paths of an upload and a download are loaded.
            warm = run.upload(UPLOADS[0], small, digests[small])
            run.download(DOWNLOADS[0], warm, MIB)
            idle = rss_bytes(run.pid)
            with RssWatch(run.pid, 0.05) as rss:
                run.upload(UPLOADS[0], big, digests[big])
            time.sleep(1.0)  # a figure, not readiness: RSS once the upload has settled
            out.update({"rss.idle": idle / MIB, "rss.peak": rss.peak / MIB,
                        "rss.growth": (rss.peak - idle) / MIB,
                        "rss.after": rss_bytes(run.pid) / MIB,
                        "big.rate": two * MIB / run.last.seconds / 1e6,
                        "big.server_cpu": run.last.server_cpu})
            file_id = ""
            for t in UPLOADS:
                file_id = run.upload(t, source, digests[source])
                out.update(run.figures(t, one * MIB))
            for t in DOWNLOADS:
                run.download(t, file_id, one * MIB)
                out.update(run.figures(t, one * MIB * t.connections * t.per_connection))
            check_disturbance(s, "files", max(run.others), run.steal_pct)
        return out


def _user_seconds(cpus: tuple[int, ...]) -> float:
    """User + nice seconds of CPUs `cpus` since boot (/proc/stat)."""
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            total += int(fields[0]) + int(fields[1])
    return total / _CLK_TCK


def _process_user_seconds(pid: int) -> float:
    """User seconds of process `pid` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _CLK_TCK


def _ensure(path: Path, mib: int) -> str:
    """The test file of `mib` MiB (written once per invocation) and its SHA-256."""
    digest_file = path.with_suffix(".sha256")
    if not path.exists() or not digest_file.exists():
        digest_file.write_text(write_blocks(path, mib))
    return digest_file.read_text()


class _Run:
    """The transfers of one run against one server; `last` is the latest one's figures."""

    def __init__(self, s: Settings, pid: int, host: str, port: int, token: str,
                 run_dir: Path) -> None:
        self.s = s
        self.pid = pid
        self.host = host
        self.port = port
        self.token = token
        self.run_dir = run_dir
        self.last = Figures(0.0, 0.0, 0.0, "")
        self.others: list[float] = [0.0]
        self._steal = self._wall = 0.0

    @property
    def steal_pct(self) -> float:
        return 100 * self._steal / self._wall if self._wall else 0.0

    def url(self, path: str, tls: bool) -> str:
        return f"{'https' if tls else 'http'}://{self.host}:{self.port}{path}"

    def _client(self, argv: list[str]) -> Figures:
        """Run one client pinned to the generator CPU: its wall time, the CPUs, its output."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        usage = Usage(self.pid, self.s.cpus)
        user0, server_user0 = _user_seconds(self.s.cpus), _process_user_seconds(self.pid)
        started = time.monotonic()
        done = subprocess.run(["taskset", "-c", str(self.s.gen_cpu), *argv], capture_output=True,
                              text=True, timeout=CLIENT_TIMEOUT_S, check=False)
        wall = time.monotonic() - started
        usage.stop()
        other_user = (_user_seconds(self.s.cpus) - user0
                      - (_process_user_seconds(self.pid) - server_user0))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise BenchError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-800:]}")
        client_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        self._steal += usage.steal_s
        self._wall += usage.seconds
        # Other processes' load in user space only: the kernel's share of a
        # transfer (loopback softirqs, page-cache writeback in kworkers) is
        # charged to no process and would mark every run disturbed.
        self.others.append(max(0.0, 100 * (other_user - (after.ru_utime - before.ru_utime))
                               / wall))
        self.last = Figures(wall, usage.server_pct, 100 * client_s / wall, done.stdout)
        return self.last

    def _curl(self, t: Transfer, args: list[str], path: str, out: Path | None
              ) -> tuple[str, int]:
        """curl as `t` says; returns the HTTP status and the bytes it received
        (`last.seconds` is curl's time_total)."""
        version = "--http1.1" if t.version == "1.1" else (
            "--http2" if t.tls else "--http2-prior-knowledge")
        figures = self._client([
            "curl", "-sS", "-k", version, "-H", f"Authorization: Bearer {self.token}",
            "-o", str(out) if out else "/dev/null",
            "-w", "\n%{http_code} %{time_total} %{http_version} %{size_download}",
            *args, self.url(path, t.tls)])
        code, total, used, received = figures.stdout.rsplit("\n", 1)[1].split()
        if used != t.version:
            raise BenchError(f"{t.label}: curl spoke HTTP/{used}")
        figures.seconds = float(total)  # curl's own clock: no process start-up in it
        return code, int(received)

    def upload(self, t: Transfer, path: Path, sha256: str) -> str:
        """Upload `path` as `t` says; returns the file's id (its digest checked)."""
        answer = self.run_dir / "answer.json"
        if t.kind == "post":
            code, _ = self._curl(t, ["-X", "POST", "-T", str(path)], "/v1/files?name=bench",
                                 answer)
            expected = "201"
        else:
            location = self._tus_create(path.stat().st_size)
            code, _ = self._curl(t, ["-X", "PATCH", "-T", str(path), *_TUS], location, answer)
            expected = "204"
            figures = self.last
            answer.write_text(self._request("GET", f"/v1/files/{location.rsplit('/', 1)[1]}/meta"
                                             )[1])
            self.last = figures
        if code != expected:
            raise BenchError(f"{t.label}: HTTP {code}: {answer.read_text()[:500]}")
        doc = json.loads(answer.read_text())
        if doc.get("sha256") != sha256:
            raise BenchError(f"{t.label}: stored sha256 {doc.get('sha256')}, sent {sha256}")
        return str(doc["id"])

    def download(self, t: Transfer, file_id: str, size: int) -> None:
        """Download the file as `t` says (every byte counted)."""
        path = f"/v1/files/{file_id}"
        if t.client == "curl":
            code, got = self._curl(t, [], path, None)
            if code != "200" or got != size:
                raise BenchError(f"{t.label}: HTTP {code}, {got} of {size} bytes")
            return
        count = t.connections * t.per_connection
        figures = self._client([
            "h2load", *(["--h1"] if t.version == "1.1" else ["-w", "30", "-W", "30"]),
            "-c", str(t.connections), "-n", str(count),
            "-H", f"authorization: Bearer {self.token}", self.url(path, t.tls)])
        data = re.search(r"traffic: .*\((\d+)\) data", figures.stdout)
        took = re.search(r"finished in ([\d.]+)(m?s)", figures.stdout)
        if (f"status codes: {count} 2xx" not in figures.stdout or data is None or took is None
                or int(data[1]) != count * size):
            raise BenchError(f"{t.label}: h2load says {figures.stdout[-800:]}")
        figures.seconds = float(took[1]) / (1000 if took[2] == "ms" else 1)

    def figures(self, t: Transfer, size: int) -> dict[str, float]:
        """The last transfer's figures (`size` bytes moved) under `t`'s keys."""
        f = self.last
        return {f"{t.key}.rate": size / f.seconds / 1e6, f"{t.key}.server_cpu": f.server_cpu,
                f"{t.key}.client_cpu": f.client_cpu}

    def _tus_create(self, length: int) -> str:
        status, location = self._request("POST", "/v1/uploads", {
            "Tus-Resumable": "1.0.0", "Upload-Length": str(length)})
        if status != 201:
            raise BenchError(f"tus creation: HTTP {status}")
        return location

    def _request(self, method: str, path: str, headers: dict[str, str] | None = None
                 ) -> tuple[int, str]:
        """A small request; its status and its Location (POST) or body."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, headers={"Authorization": f"Bearer {self.token}",
                                                **(headers or {})})
            response = conn.getresponse()
            body = response.read().decode()
            return response.status, response.getheader("location") or body
        finally:
            conn.close()
