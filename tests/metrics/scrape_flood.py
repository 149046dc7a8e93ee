"""A scrape flood in a process of its own: ``python -m tests.metrics.scrape_flood``.

Arguments: host port key seconds connections [source].  Each connection
sends ``GET /metrics`` back to back over HTTP/1.1 keep-alive (with a wrong
operator key when `key` is "-"), from `source` when given, reconnecting when
the server closes it or refuses the connection; prints one JSON object:
answers by status, bytes read, reconnections and scrapes per second.  Its
own work runs in its own process, so it is not timed as the server's.
"""

from __future__ import annotations

import collections
import json
import socket
import sys
import threading
import time


def _answer(sock: socket.socket, buffer: bytearray) -> tuple[int, int]:
    """Read one response: (status, body bytes)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = next(int(line.split(b":", 1)[1]) for line in lines[1:]
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    buffer[:] = rest[length:]
    return status, length


def _flood(host: str, port: int, key: str, source: str | None, until: float,
           counts: collections.Counter[str], lock: threading.Lock) -> None:
    request = (f"GET /metrics HTTP/1.1\r\nHost: {host}\r\n"
               f"Authorization: Bearer {key}\r\n\r\n").encode()
    while time.monotonic() < until:
        try:
            with socket.create_connection((host, port), timeout=5,
                                          source_address=(source, 0) if source else None
                                          ) as sock:
                buffer = bytearray()
                while time.monotonic() < until:
                    sock.sendall(request)
                    status, size = _answer(sock, buffer)
                    with lock:
                        counts[str(status)] += 1
                        counts["bytes"] += size
        except (OSError, ConnectionError, StopIteration, ValueError):
            with lock:
                counts["reconnects"] += 1


def main() -> None:
    host, port, key, seconds, connections = sys.argv[1:6]
    source = sys.argv[6] if len(sys.argv) > 6 else None
    wrong = "tdo_wrong-key"
    until = time.monotonic() + float(seconds)
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    threads = [threading.Thread(target=_flood, args=(
        host, int(port), wrong if key == "-" else key, source, until, counts, lock))
        for _ in range(int(connections))]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    scrapes = counts["200"]
    print(json.dumps({**counts, "scrapes_per_s": round(scrapes / elapsed, 1)}), flush=True)


if __name__ == "__main__":
    main()
