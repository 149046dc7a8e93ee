"""Hostile peers for the transport's attack tests: raw sockets that write and never read.

Each `Flood` runs in a thread (the asyncio loop of the test keeps the honest
pair going) and writes one chunk after another until its time is up or the
server hangs up.  Its receive buffer is made small, so what the server answers
piles up in the server process, where `RssWatch` sees it, not in our kernel.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable

#: A receive buffer this small makes the server's answers back up at once.
SMALL_RCVBUF = 4096

# RFC 9113 §3.4 connection preface and §6 frame types.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_SETTINGS, H2_PING = 0x0, 0x1, 0x4, 0x6


def h2_frame(ftype: int, payload: bytes = b"", flags: int = 0, stream: int = 0) -> bytes:
    """One HTTP/2 frame (RFC 9113 §4.1)."""
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") \
        + payload


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client WebSocket frame (RFC 6455 §5.2), payload below 64 KiB."""
    mask = b"\x11\x22\x33\x44"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    if len(payload) < 126:
        head = bytes([0x80 | opcode, 0x80 | len(payload)])
    else:
        head = bytes([0x80 | opcode, 0x80 | 126]) + len(payload).to_bytes(2, "big")
    return head + mask + masked


WS_UPGRADE = (b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def connect(host: str, port: int, rcvbuf: int = SMALL_RCVBUF) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((host, port))
    return sock


class Flood:
    """Writes `chunk` again and again on `sock` for `duration_s`, never reading."""

    def __init__(self, sock: socket.socket, chunk: bytes | Callable[[], bytes],
                 duration_s: float, bytes_per_s: float | None = None) -> None:
        self.sock = sock
        self.chunk = chunk
        self.duration_s = duration_s
        self.bytes_per_s = bytes_per_s
        self.sent = 0
        #: Seconds from the start until the server hung up (None: it never did).
        self.closed_after: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Flood:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        started = time.monotonic()
        end = started + self.duration_s
        pending = b""  # what a timed-out send left over: the byte stream stays whole
        while time.monotonic() < end:
            if self.bytes_per_s is not None:
                ahead = self.sent / self.bytes_per_s - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if not pending:
                pending = self.chunk() if callable(self.chunk) else self.chunk
            try:
                n = self.sock.send(pending)
            except TimeoutError:
                continue  # the server stopped reading: keep the pressure on
            except OSError:
                self.closed_after = time.monotonic() - started
                return
            pending = pending[n:]
            self.sent += n
        # Still open: did the server hang up meanwhile?  (a reset shows on send)
        if closed(self.sock):
            self.closed_after = time.monotonic() - started


def closed(sock: socket.socket) -> bool:
    """True if the server has reset or closed `sock` (reads what is buffered to know)."""
    sock.settimeout(0.2)
    try:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


def wait_closed(sock: socket.socket, timeout_s: float) -> float | None:
    """Read (and drop) everything until the server hangs up; seconds it took, or None."""
    started = time.monotonic()
    sock.settimeout(0.5)
    while time.monotonic() - started < timeout_s:
        try:
            if not sock.recv(1 << 20):
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    return None


class TlsPeer:
    """TLS over a raw socket with memory BIOs: every read is ours to make, or not."""

    def __init__(self, host: str, port: int, cafile: str, alpn: str) -> None:
        self.sock = connect(host, port)
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.set_alpn_protocols([alpn])
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self._in, self._out, server_hostname="localhost")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self._out.read())
                self._in.write(self.sock.recv(65536))
        self.sock.sendall(self._out.read())

    def encrypt(self, data: bytes) -> bytes:
        """The records that carry `data` (to send in order, once)."""
        self.tls.write(data)
        return self._out.read()

    def read_some(self) -> bytes:
        """Plaintext from the next read(s) of the socket (at least one byte)."""
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._in.write(self.sock.recv(65536))
