"""Attackers of the streaming transport (uploads and downloads, issue 15).

Each runs in a process of its own (`AttackProcess`, spawned): the test's
process keeps an honest client's timings and the server's RSS clean of the
attacker's CPU.  An attack calls ``ready(info)`` once it is in place, then
runs to its natural end (the server cut it, or it saw what it expected) and
returns what it saw as a JSON-able dict.  Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import select
import selectors
import socket
import time
import traceback
from collections.abc import Callable
from multiprocessing.synchronize import Event
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from tests.transport.hostile_peers import H2_DATA, SMALL_RCVBUF, h2_frame

GIB = 1 << 30
#: No attack waits longer than this for the server's answer.
ATTACK_LIMIT_S = 60.0
#: RST_STREAM (RFC 9113 §6.4) with CANCEL.
_RST_CANCEL = (0x8).to_bytes(4, "big")

Ready = Callable[[dict[str, Any]], None]


def upload_head(token: str, length: int = GIB, path: str = "/v1/files") -> bytes:
    """The head of an HTTP/1.1 upload of `length` bytes."""
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
            ).encode()


def _status(head: bytes) -> int:
    """The status of an HTTP/1.1 answer's first line (0 if none came)."""
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _cut_times(socks: list[socket.socket], started: list[float], *, read: bool,
               stop: Event | None = None, send: bytes = b"") -> list[dict[str, Any]]:
    """Watch `socks` until the server ends each (or `ATTACK_LIMIT_S`): per socket, the
    seconds from its start to the end, the status it was answered, and the body
    bytes it got sent into the server's side (`send`, as fast as it goes)."""
    sel = selectors.DefaultSelector()
    seen: list[dict[str, Any]] = [{"cut_after": None, "status": 0, "sent": 0} for _ in socks]
    heads = [b""] * len(socks)
    for index, sock in enumerate(socks):
        sock.setblocking(False)
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if send else 0)
        sel.register(sock, events, index)
    open_count = len(socks)
    end = time.monotonic() + ATTACK_LIMIT_S
    while open_count and time.monotonic() < end and not (stop is not None and stop.is_set()):
        for key, mask in sel.select(0.5):
            index = key.data
            sock = socks[index]
            gone = False
            try:
                if mask & selectors.EVENT_READ and read:
                    data = sock.recv(65536)
                    gone = not data
                    if len(heads[index]) < 4096:
                        heads[index] += data
                if not gone and mask & selectors.EVENT_WRITE:
                    seen[index]["sent"] += sock.send(send)
            except BlockingIOError:
                continue
            except OSError:
                gone = True
            if gone:
                seen[index]["cut_after"] = time.monotonic() - started[index]
                seen[index]["status"] = _status(heads[index])
                sel.unregister(sock)
                open_count -= 1
    for index, head in enumerate(heads):
        seen[index]["status"] = seen[index]["status"] or _status(head)
    sel.close()
    return seen


# --- (a), (b): HTTP/1.1 uploads that stall, or that come without a valid token ---------------


def stalled_uploads(host: str, port: int, token: str, connections: int, ready: Ready,
                    stop: Event) -> dict[str, Any]:
    """`connections` uploads of 1 GiB (a valid token) that send their head, then nothing."""
    socks, started = [], []
    for _ in range(connections):
        sock = socket.create_connection((host, port), timeout=10)
        sock.sendall(upload_head(token))
        socks.append(sock)
        started.append(time.monotonic())
    ready({"connections": len(socks)})
    seen = _cut_times(socks, started, read=True)
    for sock in socks:
        sock.close()
    return {"connections": seen}


def unauthenticated_floods(host: str, port: int, token: str, connections: int, ready: Ready,
                           stop: Event) -> dict[str, Any]:
    """`connections` uploads of 1 GiB with a made-up token, sending the body as fast as the
    server takes it, reading what it answers."""
    socks, started = [], []
    for _ in range(connections):
        sock = socket.create_connection((host, port), timeout=10)
        sock.sendall(upload_head("tdg_" + "x" * 27))
        socks.append(sock)
        started.append(time.monotonic())
    ready({"connections": len(socks)})
    seen = _cut_times(socks, started, read=True, send=b"\0" * 65536)
    for sock in socks:
        sock.close()
    return {"connections": seen}


# --- (c): HTTP/2 uploads that never send DATA, and DATA past the window ---------------------


def _h2(host: str, port: int, *, window: int = 0, rcvbuf: int = 0
        ) -> tuple[socket.socket, h2.connection.H2Connection]:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((host, port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    if window:
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        conn.increment_flow_control_window(window - 65_535)  # from its initial 65,535
    sock.sendall(conn.data_to_send())
    return sock, conn


def _upload_headers(token: str, path: str = "/v1/files") -> list[tuple[str, str]]:
    return [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "x"),
            ("authorization", f"Bearer {token}"), ("content-length", str(GIB))]


def _h2_events(sock: socket.socket, conn: h2.connection.H2Connection,
               done: Callable[[list[Any]], bool]) -> list[Any]:
    """Events until `done(events)`, the server closes, or `ATTACK_LIMIT_S`."""
    events: list[Any] = []
    end = time.monotonic() + ATTACK_LIMIT_S
    sock.settimeout(0.5)
    while time.monotonic() < end and not done(events):
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except OSError:
            break
        if not data:
            break
        try:
            events.extend(conn.receive_data(data))
        except h2.exceptions.ProtocolError:
            break
        pending = conn.data_to_send()
        if pending:
            try:
                sock.sendall(pending)
            except OSError:
                break
    return events


def _terminated(events: list[Any]) -> int | None:
    ended = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    return int(ended[0].error_code or 0) if ended else None


def h2_stalled_uploads(host: str, port: int, token: str, streams: int, ready: Ready,
                       stop: Event) -> dict[str, Any]:
    """One connection, `streams` uploads of 1 GiB at once (a valid token), never a DATA frame."""
    sock, conn = _h2(host, port)
    started = time.monotonic()
    ids = []
    for _ in range(streams):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, _upload_headers(token))
        ids.append(sid)
    sock.sendall(conn.data_to_send())
    ready({"streams": streams})
    ended: dict[int, float] = {}
    statuses: dict[int, int] = {}
    credit = 0
    events: list[Any] = []
    end = time.monotonic() + ATTACK_LIMIT_S
    while time.monotonic() < end and len(ended) < len(ids):
        batch = _h2_events(sock, conn, lambda got: bool(got))
        if not batch:
            break
        events.extend(batch)
        now = time.monotonic() - started
        for event in batch:
            if isinstance(event, h2.events.ResponseReceived):
                statuses[event.stream_id] = int(dict(event.headers)[b":status"])
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                ended.setdefault(event.stream_id, now)
            elif isinstance(event, h2.events.WindowUpdated):
                credit += event.delta
        if _terminated(batch) is not None:
            break
    sock.close()
    return {"ended_after": sorted(ended.values()), "statuses": sorted(statuses.values()),
            "unanswered": len(ids) - len(ended), "window_credit": credit,
            "terminated": _terminated(events)}


def h2_past_the_window(host: str, port: int, token: str, ready: Ready,
                       stop: Event) -> dict[str, Any]:
    """An upload whose client sends 2 MiB of DATA at once, whatever its windows say."""
    sock, conn = _h2(host, port)
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, _upload_headers(token))
    sock.sendall(conn.data_to_send())
    ready({})
    chunk = h2_frame(H2_DATA, b"\0" * 16384, stream=sid)
    sent = 0
    try:
        for _ in range(128):
            sock.sendall(chunk)
            sent += 16384
    except OSError:
        pass  # cut while it still sends: that is the point
    events = _h2_events(sock, conn, lambda got: _terminated(got) is not None)
    sock.close()
    return {"sent": sent, "terminated": _terminated(events)}


# --- (d): downloads that are never read ----------------------------------------------------


def unread_downloads(host: str, port: int, token: str, file_id: str, http1: int, http2: int,
                     ready: Ready, stop: Event) -> dict[str, Any]:
    """`http1` + `http2` connections that each ask for the whole file and never read."""
    socks, started, kinds = [], [], []
    for _ in range(http1):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
        sock.connect((host, port))
        sock.sendall(f"GET /v1/files/{file_id} HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {token}\r\n\r\n".encode())
        socks.append(sock)
        kinds.append("http1")
    for _ in range(http2):
        # Windows as wide as they go: only the server's own bound holds it back.
        sock, conn = _h2(host, port, window=(1 << 31) - 1, rcvbuf=SMALL_RCVBUF)
        conn.send_headers(1, [(":method", "GET"), (":path", f"/v1/files/{file_id}"),
                              (":scheme", "http"), (":authority", "x"),
                              ("authorization", f"Bearer {token}")], end_stream=True)
        sock.sendall(conn.data_to_send())
        socks.append(sock)
        kinds.append("http2")
    started = [time.monotonic()] * len(socks)
    ready({"connections": len(socks)})
    seen = _hangups(socks, started)
    for sock in socks:
        sock.close()
    return {"connections": [{**s, "kind": k} for s, k in zip(seen, kinds, strict=True)]}


def _hangups(socks: list[socket.socket], started: list[float]) -> list[dict[str, Any]]:
    """Without reading a byte: when the server hangs up each socket (reset or FIN)."""
    poller = select.poll()
    by_fd = {sock.fileno(): index for index, sock in enumerate(socks)}
    for fd in by_fd:
        poller.register(fd, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    seen: list[dict[str, Any]] = [{"cut_after": None} for _ in socks]
    left = len(socks)
    end = time.monotonic() + ATTACK_LIMIT_S
    while left and time.monotonic() < end:
        for fd, _mask in poller.poll(500):
            seen[by_fd[fd]]["cut_after"] = time.monotonic() - started[by_fd[fd]]
            poller.unregister(fd)
            left -= 1
    return seen


# --- (e): HTTP/2 rapid reset of downloads ---------------------------------------------------


def h2_reset_downloads(host: str, port: int, token: str, file_id: str, streams: int,
                       ready: Ready, stop: Event) -> dict[str, Any]:
    """Open a download and reset it at once, `streams` times, in batches of 50."""
    sock, conn = _h2(host, port)
    ready({})
    headers = [(":method", "GET"), (":path", f"/v1/files/{file_id}"), (":scheme", "http"),
               (":authority", "x"), ("authorization", f"Bearer {token}")]
    opened = 0
    events: list[Any] = []
    try:
        while opened < streams and _terminated(events) is None:
            for _ in range(50):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, headers, end_stream=True)
                conn.reset_stream(sid)
                opened += 1
            sock.sendall(conn.data_to_send())
            sock.settimeout(0.05)
            try:
                data = sock.recv(1 << 20)
                events.extend(conn.receive_data(data) if data else [])
            except TimeoutError:
                pass
    except (OSError, h2.exceptions.ProtocolError):
        pass  # cut while it still sends
    if _terminated(events) is None:
        events += _h2_events(sock, conn, lambda got: _terminated(got) is not None)
    sock.close()
    return {"opened": opened, "terminated": _terminated(events)}


# --- (f): Range headers built to cost the parser ----------------------------------------------


def range_abuse(host: str, port: int, token: str, file_id: str, rounds: int, ready: Ready,
                stop: Event) -> dict[str, Any]:
    """`rounds` times each: 10,000 ranges, as many ranges as fit the header bound, a
    10 kB number, over HTTP/1.1 (a new connection each); and 10,000 ranges over HTTP/2."""
    shapes = {"ten_thousand": "bytes=" + ",".join(f"{i}-{i}" for i in range(10_000)),
              "as_many_as_fit": "bytes=" + ",".join(["-1"] * 4_000),
              "ten_kb_number": "bytes=0-" + "9" * 10_000,
              "overlapping": "bytes=" + ",".join(["0-"] * 3_000)}
    ready({})
    seen: dict[str, list[str]] = {name: [] for name in shapes}
    for _ in range(rounds):
        for name, value in shapes.items():
            seen[name].append(_h1_range(host, port, token, file_id, value))
    sock, conn = _h2(host, port)
    conn.send_headers(1, [(":method", "GET"), (":path", f"/v1/files/{file_id}"),
                          (":scheme", "http"), (":authority", "x"),
                          ("authorization", f"Bearer {token}"),
                          ("range", shapes["ten_thousand"])], end_stream=True)
    sock.sendall(conn.data_to_send())
    events = _h2_events(sock, conn, lambda got: any(
        isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset,
                       h2.events.ConnectionTerminated)) for e in got))
    sock.close()
    h2_status = [int(dict(e.headers)[b":status"]) for e in events
                 if isinstance(e, h2.events.ResponseReceived)]
    return {"http1": {name: sorted(set(v)) for name, v in seen.items()},
            "http2_status": h2_status, "http2_terminated": _terminated(events)}


def _h1_range(host: str, port: int, token: str, file_id: str, value: str) -> str:
    """One GET with `value` as its Range: "<status> <content-length> <content-range>"."""
    with socket.create_connection((host, port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # refused while it still sent the head
            sock.sendall(f"GET /v1/files/{file_id} HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: Bearer {token}\r\nRange: {value}\r\n"
                         "Connection: close\r\n\r\n".encode())
        answer = b""
        try:
            while chunk := sock.recv(1 << 20):
                answer += chunk
        except OSError:
            pass
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1").lower().split("\r\n")
    fields = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    return " ".join([str(_status(answer)), fields.get("content-length", "-"),
                     fields.get("content-range", "-")])


# --- running an attack in its own process ------------------------------------------------


ATTACKS: dict[str, Callable[..., dict[str, Any]]] = {
    "stalled_uploads": stalled_uploads, "unauthenticated_floods": unauthenticated_floods,
    "h2_stalled_uploads": h2_stalled_uploads, "h2_past_the_window": h2_past_the_window,
    "unread_downloads": unread_downloads, "h2_reset_downloads": h2_reset_downloads,
    "range_abuse": range_abuse}


def _main(name: str, kwargs: dict[str, Any], out: multiprocessing.Queue[Any],
          stop: Event) -> None:
    try:
        result = ATTACKS[name](**kwargs, ready=lambda info: out.put(("ready", info)), stop=stop)
        out.put(("done", result))
    except Exception:  # noqa: BLE001 - reported to the test, which fails with it
        out.put(("error", traceback.format_exc()))


class AttackProcess:
    """An attack from `ATTACKS` in a spawned process: `start` returns once it is in place."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._out: multiprocessing.Queue[Any] = context.Queue()
        self.stop = context.Event()
        self._process = context.Process(target=_main, args=(name, kwargs, self._out, self.stop),
                                         daemon=True)
        self.info: dict[str, Any] = {}

    def _next(self, timeout: float) -> tuple[str, Any]:
        try:
            kind, value = self._out.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the attacker said nothing within {timeout:.0f} s") from None
        if kind == "error":
            raise AssertionError(f"the attacker failed:\n{value}")
        return str(kind), value

    def start(self) -> dict[str, Any]:
        self._process.start()
        _, self.info = self._next(ATTACK_LIMIT_S)
        return self.info

    def result(self) -> dict[str, Any]:
        """Its findings (it runs to its own end; `stop` asks it to end sooner)."""
        try:
            _, value = self._next(ATTACK_LIMIT_S + 30)
            return dict(value)
        finally:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
