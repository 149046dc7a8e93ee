"""Ask the running server itself: ``GET /v1/health`` on its main listener.

Over TLS without verifying the certificate: the server is our own, on this
machine, and the question is whether it answers, not who it is (a
self-signed certificate must not make a healthy server look sick).  The
address comes from the status file, which the service user writes: only
loopback is ever asked (a wildcard listener is asked on loopback, any
other address is refused), and the answer read is bounded.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import ssl
import time
from dataclasses import dataclass
from typing import Final

HEALTH_PATH: Final = "/v1/health"
TIMEOUT_S: Final = 3.0
_MAX_BODY = 4096


@dataclass(frozen=True, slots=True)
class Health:
    """The answer to one health request."""

    url: str
    ok: bool
    status: int = 0  # HTTP status; 0 when none came
    elapsed_ms: float = 0.0
    error: str = ""


def loopback_for(host: str) -> str | None:
    """The address to ask a listener on `host` at: itself when loopback, the loopback of
    its family for a wildcard, None for any other address."""
    if host in ("", "0.0.0.0"):  # a wildcard listener is asked on loopback
        return "127.0.0.1"
    if host == "::":
        return "::1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "127.0.0.1" if host == "localhost" else None
    return str(address) if address.is_loopback else None


def check_health(host: str, port: int, timeout_s: float = TIMEOUT_S) -> Health:
    """``GET https://<loopback>:<port>/v1/health``; `ok` when it answers 200 {"status": "ok"}."""
    target = loopback_for(host)
    shown = f"[{target}]" if target and ":" in target else target
    url = f"https://{shown}:{port}{HEALTH_PATH}"
    if target is None:
        return Health(f"https://{host}:{port}{HEALTH_PATH}", False,
                      error=f"{host} is not a loopback address: not asked")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # our own server on loopback (see the module doc)
    started = time.monotonic()
    conn = http.client.HTTPSConnection(target, port, timeout=timeout_s, context=context)
    try:
        conn.request("GET", HEALTH_PATH, headers={"User-Agent": "tidings-status"})
        response = conn.getresponse()
        body = response.read(_MAX_BODY)
    except TimeoutError:
        return Health(url, False, elapsed_ms=_ms_since(started),
                      error=f"no answer within {timeout_s:g} s")
    except ConnectionRefusedError:
        return Health(url, False, elapsed_ms=_ms_since(started),
                      error=f"connection refused: nothing listens on port {port}")
    except ssl.SSLError as exc:
        return Health(url, False, elapsed_ms=_ms_since(started),
                      error=f"TLS handshake failed: {exc.reason or exc}")
    except (OSError, http.client.HTTPException) as exc:
        return Health(url, False, elapsed_ms=_ms_since(started),
                      error=str(exc) or type(exc).__name__)
    finally:
        conn.close()
    elapsed = _ms_since(started)
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    ok = response.status == 200 and isinstance(answer, dict) and answer.get("status") == "ok"
    return Health(url, ok, response.status, elapsed,
                  "" if ok else f"HTTP {response.status}: unexpected answer")


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
