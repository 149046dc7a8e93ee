"""Signed test releases built in Python, and a release server on 127.0.0.1.

The "executable" of a test release is a small sh script that answers
``--version`` like tidings and records (or fails) ``db migrate``: enough for
every step of `tidings upgrade` that does not need systemd.  The signing key
is a throwaway one, trusted through ``TIDINGS_TRUSTED_KEYS`` (honoured by an
unfrozen checkout only).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from appliance.release.manifest import (
    MANIFEST,
    SIGNATURE,
    SUMS,
    Manifest,
    ReleaseFile,
    executable_name,
    format_sums,
)
from appliance.release.signature import new_private_pem, public_pem, sign
from appliance.upgrade.release import machine_arch

EXE = executable_name(machine_arch())


def script(version: str, migrate: str = "exit 0", says: str | None = None) -> bytes:
    """A stand-in executable: ``--version`` says `says` (default `version`); ``db migrate``
    runs `migrate` (sh) with $DATA set to the --data-dir argument."""
    return f"""#!/bin/sh
# tidings {version} (test stand-in)
DATA=
while [ $# -gt 0 ]; do
  case "$1" in
    --version) echo "tidings, version {says or version}"; exit 0 ;;
    --data-dir) DATA="$2"; shift ;;
    migrate) {migrate}; exit $? ;;
  esac
  shift
done
exit 0
""".encode()


@dataclass
class Keys:
    private: bytes = field(default_factory=new_private_pem)

    @property
    def public(self) -> bytes:
        return public_pem(self.private)


def release_files(version: str, executable: bytes, keys: Keys, *, upgrades_from: str = "0.0.1"
                  ) -> dict[str, bytes]:
    """The files of a signed release directory."""
    manifest = Manifest(version, upgrades_from, {
        EXE: ReleaseFile(hashlib.sha256(executable).hexdigest(), len(executable))}).to_json()
    sums = format_sums({EXE: hashlib.sha256(executable).hexdigest(),
                        MANIFEST: hashlib.sha256(manifest).hexdigest()})
    return {EXE: executable, MANIFEST: manifest, SUMS: sums, SIGNATURE: sign(sums, keys.private)}


Behaviour = Callable[[BaseHTTPRequestHandler], None]


class ReleaseServer:
    """Serves ``/<dir>/<file>`` from `files`, or a `Behaviour` for a path (hostile servers)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.behaviours: dict[str, Behaviour] = {}
        self.requests: list[str] = []
        self.release_hangs = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if self.path in outer.behaviours:
                    outer.behaviours[self.path](self)
                    return
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def publish(self, directory: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            self.files[f"/{directory}/{name}"] = data

    def hang(self, handler: BaseHTTPRequestHandler) -> None:
        """Accept the request, never answer (until the server stops)."""
        self.release_hangs.wait(60)

    def endless(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        chunk = b"0" * 65536
        try:
            for _ in range(1 << 16):  # 4 GiB at most; the client stops long before
                handler.wfile.write(chunk)
        except OSError:
            return

    def huge_length(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(1 << 40))
        handler.end_headers()

    @contextmanager
    def running(self) -> Iterator[ReleaseServer]:
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.release_hangs.set()
            self.httpd.shutdown()
            self.httpd.server_close()
            thread.join(10)
