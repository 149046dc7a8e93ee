"""The operator's view of a running server, as a monitoring script would read it."""

from __future__ import annotations

import json
import socket

from tests.conftest import tidings
from tests.support.server import ServerProcess


def operator_stats(server: ServerProcess) -> dict[str, object]:
    """`GET /v1/operator/stats` with the operator key (raw HTTP/1.1: no client library)."""
    key = tidings(server.data_dir, "operator", "key").stdout.strip()
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(f"GET /v1/operator/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     f"Authorization: Bearer {key}\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    figures: dict[str, object] = json.loads(body)
    return figures
