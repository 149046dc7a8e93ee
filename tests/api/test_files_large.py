"""A 2 GiB file through real curl (issue 15): the server holds a bounded buffer, not the file.

The upload streams to disk as it arrives (HTTP/1.1 stops reading past
`STREAM_BUFFER_BYTES`, the blob writer flushes every 256 KiB): the server's
RSS, sampled every 50 ms, must stay within 64 MiB of idle for the whole
upload.  The file is then downloaded whole, inside TLS over HTTP/1.1 and in
clear over HTTP/2, and must hash to what was sent.  A memory bound, never a
timing.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.bigfile import write_blocks
from tests.support.components import missing
from tests.support.hostile import RssWatch, rss_bytes
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

MIB = 1 << 20
SIZE_MIB = 2048
#: The issue's bound on what a 2 GiB upload may add to the server's RSS.
GROWTH_LIMIT = 64 * MIB
#: A transfer that stalls fails the test instead of hanging it (~10x its time here).
CURL_MAX_S = 120


@dataclass
class Server:
    process: ServerProcess
    token: str

    def url(self, path: str, *, tls: bool = False) -> str:
        scheme = "https" if tls else "http"
        return f"{scheme}://{self.process.host}:{self.process.port}{path}"

    def curl(self, *args: str) -> dict[str, object]:
        done = subprocess.run(["curl", "-sS", "--fail-with-body", "-m", str(CURL_MAX_S), "-H",
                               f"Authorization: Bearer {self.token}", *args],
                              capture_output=True, timeout=300, check=True)
        doc: dict[str, object] = json.loads(done.stdout)
        return doc

    def download_sha256(self, *args: str) -> tuple[str, int]:
        """Download through curl's stdout, hashing as it comes (never 2 GiB in memory)."""
        digest = hashlib.sha256()
        size = 0
        with subprocess.Popen(["curl", "-sS", "--fail", "-k", "-m", str(CURL_MAX_S), "-H",
                               f"Authorization: Bearer {self.token}", *args],
                              stdout=subprocess.PIPE) as curl:
            assert curl.stdout is not None
            while block := curl.stdout.read(MIB):
                digest.update(block)
                size += len(block)
        assert curl.returncode == 0, f"curl {args}: exit {curl.returncode}"
        return digest.hexdigest(), size


@pytest.fixture
def server(data_dir: Path) -> Iterator[Server]:
    if shutil.which("curl") is None:
        missing("curl is not installed (apt-get install curl)")
    secret = subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(data_dir),
                             "app", "secret"], capture_output=True, text=True, check=True,
                            timeout=60).stdout.strip()
    process = ServerProcess.configured(
        data_dir, f"[media]\nmax_file_bytes = {4 * 1024 * MIB}\n"
        f"max_app_bytes = {16 * 1024 * MIB}\n")
    process.start()
    try:
        conn = http.client.HTTPConnection(process.host, process.port, timeout=30)
        auth = {"Authorization": f"Bearer {secret}"}
        conn.request("POST", "/v1/users", json.dumps({"address": "alice"}), auth)
        conn.getresponse().read()
        conn.request("POST", "/v1/users/alice/tokens", json.dumps({}), auth)
        token = json.loads(conn.getresponse().read())["token"]
        conn.close()
        yield Server(process, token)
    finally:
        process.stop()
    assert "Traceback" not in process.output, process.output


def test_a_2_gib_upload_costs_the_server_a_bounded_buffer(server: Server,
                                                          tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    sent = write_blocks(source, SIZE_MIB)
    warm = tmp_path / "warm.bin"
    write_blocks(warm, 1)
    pid = server.process.proc.pid if server.process.proc else 0
    # A small upload and download first: the code they load is not the upload's cost.
    small = server.curl("--http1.1", "-X", "POST", "-T", str(warm), server.url("/v1/files"))
    server.download_sha256("--http1.1", server.url(f"/v1/files/{small['id']}"))

    idle = rss_bytes(pid)
    with RssWatch(pid, 0.05) as rss:
        doc = server.curl("--http1.1", "-X", "POST", "-T", str(source),
                          server.url("/v1/files?name=big.bin"))
    print(f"\n2 GiB upload: idle {idle / MIB:.1f} MiB, peak {rss.peak / MIB:.1f} MiB,"
          f" growth {(rss.peak - idle) / MIB:.1f} MiB")
    assert (doc["size"], doc["sha256"], doc["complete"]) == (SIZE_MIB * MIB, sent, True)
    assert rss.peak - idle < GROWTH_LIMIT, rss

    path = f"/v1/files/{doc['id']}"
    # HTTP/1.1 inside TLS: the TLS carrier passes the chunks through (writelines).
    assert server.download_sha256("--http1.1", server.url(path, tls=True)) == (
        sent, SIZE_MIB * MIB)
    assert server.download_sha256("--http2-prior-knowledge", server.url(path)) == (
        sent, SIZE_MIB * MIB)
