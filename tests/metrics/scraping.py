"""Scrape a real server's `/metrics` with curl and read it with prometheus-client's parser."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from appliance.metrics.exporter import RENDER_REUSE_S
from tests.support.server import ServerProcess

#: What curl adds to its arguments: the transport under test.
HTTP1 = ("--http1.1",)
H2C = ("--http2-prior-knowledge",)
H2_TLS = ("--http2", "--insecure")  # the server's self-signed certificate


@dataclass
class Answer:
    status: int
    content_type: str
    http_version: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def scrape(server: ServerProcess, *transport: str, key: str | None = None,
           source: str | None = None, method: str = "GET", path: str = "/metrics") -> Answer:
    """One request with curl; `source` binds the client's address (127.0.0.x)."""
    tls = "--http2" in transport
    url = f"{'https' if tls else 'http'}://{server.host}:{server.port}{path}"
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body"
        args = ["curl", "--silent", "--show-error", "--max-time", "20", *transport,
                "--output", str(body),
                "--write-out", "%{http_code}\n%{content_type}\n%{http_version}"]
        if method == "HEAD":
            args.append("--head")
        if key is not None:
            args += ["--header", f"Authorization: Bearer {key}"]
        if source is not None:
            args += ["--interface", source]
        done = subprocess.run([*args, url], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        status, content_type, version = done.stdout.split("\n")
        return Answer(int(status), content_type, version, body.read_bytes())


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, parsed by prometheus-client's own parser."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def value(figures: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series is absent (a counter that never moved)."""
    return figures.get((name, frozenset(labels.items())), 0.0)


def answer_until(server: ServerProcess, key: str, done: Callable[[Answer], bool],
                 *transport: str, timeout_s: float = 15.0) -> Answer:
    """Scrape until `done(answer)`: a render is reused for `RENDER_REUSE_S`, so what just
    happened shows within that (plus the time it takes to happen)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = scrape(server, *transport, key=key)
        assert answer.status == 200, answer.text
        if done(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(RENDER_REUSE_S / 4)  # the poll interval of a cached render, not readiness


def scrape_until(server: ServerProcess, key: str, done: Callable[[Samples], bool],
                 *transport: str, timeout_s: float = 15.0) -> Samples:
    """`answer_until`, on the parsed samples."""
    return samples(answer_until(server, key, lambda a: done(samples(a.text)), *transport,
                                timeout_s=timeout_s).text)
