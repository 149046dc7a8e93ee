"""A real server and its app secret, called over http.client (the REST tests' fixture)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProcess


@dataclass
class Api:
    server: ServerProcess
    secret: str

    def call(self, method: str, path: str, body: Any = None, *, secret: str | None = None,
             raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
        headers = {"Authorization": f"Bearer {self.secret if secret is None else secret}"}
        if secret == "":
            headers = {}
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        conn.close()
        doc = json.loads(payload) if payload else None
        return response.status, {k.lower(): v for k, v in response.getheaders()}, doc


@pytest.fixture
def api(data_dir: Path) -> Iterator[Api]:
    secret = subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(data_dir),
                             "app", "secret"], capture_output=True, text=True, check=True,
                            timeout=60).stdout.strip()
    server = ServerProcess(data_dir)
    server.start()
    try:
        yield Api(server, secret)
    finally:
        server.stop()
    assert "Traceback" not in server.output, server.output
