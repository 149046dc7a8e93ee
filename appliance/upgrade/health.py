"""Is the restarted server healthy?  Asked the way its clients ask.

Healthy means, on the configured port and within the deadline, both:

1. ``GET /v1/health`` over HTTPS answers ``200 {"status": "ok"}`` (the
   listener, TLS and the REST layer work);
2. a native HELLO over TLS gets a protocol answer: WELCOME, or CLOSE with
   AUTH_FAILED for the probe's made-up token.  Refusing a token means the
   engine looked it up in the store, so the store answers too.

The certificate is not verified: it may be self-signed, and what is checked
is the server's health, not the trust an operator set up.  Any other answer,
a timeout or a refused connection is "not healthy yet", retried until the
deadline.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from typing import Final

from appliance.errors import LifecycleError
from appliance.protocol.wire import Close, CloseCode, Hello, Role, Welcome, WireConnection
from appliance.protocol.wire.errors import RemoteWireError

#: Bound on one probe (connect, TLS handshake, answer).
PROBE_TIMEOUT_S: Final = 5.0
#: Pause between two probes while the server comes up.
_RETRY_S: Final = 0.2
_MAX_ANSWER: Final = 64 * 1024
_PROBE_TOKEN: Final = b"tidings-upgrade-health-probe"


def probe_host(configured: str) -> str:
    """Where to reach a server listening on `configured` from this machine."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(configured, configured)


def _tls() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # health, not trust (see the module's docstring)
    return context


def _connect(host: str, port: int, alpn: list[str] | None) -> ssl.SSLSocket:
    context = _tls()
    if alpn:
        context.set_alpn_protocols(alpn)
    raw = socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S)
    try:
        return context.wrap_socket(raw, server_hostname=None)
    except BaseException:
        raw.close()
        raise


def http_health(host: str, port: int) -> str | None:
    """None when ``/v1/health`` says ok, else what it said."""
    with _connect(host, port, ["http/1.1"]) as sock:
        sock.sendall(f"GET /v1/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                     "User-Agent: tidings-upgrade\r\n\r\n".encode())
        answer = b""
        while len(answer) <= _MAX_ANSWER and (chunk := sock.recv(8192)):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.1 200"):
        return f"/v1/health answered {status[:80]!r}"
    try:
        if json.loads(body).get("status") == "ok":
            return None
    except (ValueError, AttributeError):
        pass
    return f"/v1/health answered {body[:80]!r}"


def native_hello(host: str, port: int) -> str | None:
    """None when a HELLO gets WELCOME or CLOSE AUTH_FAILED, else what happened."""
    codec = WireConnection(Role.CLIENT)
    with _connect(host, port, None) as sock:
        sock.sendall(codec.send(Hello(token=_PROBE_TOKEN, device_id=b"upgrade-probe")))
        received = 0
        while received <= _MAX_ANSWER:
            data = sock.recv(8192)
            if not data:
                return "the server hung up without answering HELLO"
            received += len(data)
            try:
                events = codec.receive_data(data)
            except RemoteWireError as exc:
                return f"the answer to HELLO is not the protocol: {exc}"
            for event in events:
                if isinstance(event, Welcome):
                    return None
                if isinstance(event, Close):
                    return None if event.code == CloseCode.AUTH_FAILED else (
                        f"HELLO answered with CLOSE {event.code} {event.reason!r}")
    return "no answer to HELLO"


def probe(host: str, port: int) -> str | None:
    """None when healthy, else why not (one attempt)."""
    try:
        return http_health(host, port) or native_hello(host, port)
    except (OSError, ssl.SSLError) as exc:  # refused, reset, timeout, handshake
        return f"{type(exc).__name__}: {exc}"


def wait_healthy(host: str, port: int, deadline_s: float) -> float:
    """Probe until healthy; returns the seconds it took.

    Raises:
        LifecycleError: still not healthy at the deadline (the last reason).
    """
    started = time.monotonic()
    while True:
        reason = probe(host, port)
        if reason is None:
            return time.monotonic() - started
        if time.monotonic() - started > deadline_s:
            raise LifecycleError(f"not healthy within {deadline_s:.0f} s: {reason}",
                                 step="health check", fix="see journalctl -u tidings")
        time.sleep(_RETRY_S)
