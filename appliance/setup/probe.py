"""After the start: ``GET /v1/health``, then the first message, sent exactly as printed.

The wizard connects to the server on this machine (127.0.0.1 or the listen
address), names the public hostname in SNI and Host, and pins the served
certificate's key when it knows it (the operator's own or the self-signed
one; an ACME certificate may still be on its way, so that one is not
checked).  The `curl` command it prints is the same request: method, path,
headers and body.
"""

from __future__ import annotations

import http.client
import json
import shlex
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509

from appliance.errors import LifecycleError
from appliance.setup.certificate import pin_of

HEALTH_PATH: Final = "/v1/health"
MESSAGES_PATH: Final = "/v1/messages"
FIRST_TEXT: Final = "Hello from tidings setup"
#: The shell variable the printed command reads the app secret from (the secret is
#: shown once, on its own line, never inside a command that lands in shell history).
SECRET_VARIABLE: Final = "TIDINGS_APP_SECRET"
TIMEOUT_S: Final = 15.0
#: An answer of the health or message endpoint is small; more is not read.
MAX_ANSWER_BYTES: Final = 64 * 1024
HTTPS_PORT: Final = 443


@dataclass(frozen=True, slots=True)
class Target:
    """Where the server runs and how it is reached."""

    #: The address connected to (this machine).
    address: str
    port: int
    #: The public name: SNI, Host header and the printed URL.
    hostname: str
    #: The expected public-key pin of the served certificate; "" = not checked.
    pin: str = ""
    #: The printed command pins instead of verifying (a self-signed certificate).
    self_signed: bool = False

    def url(self, path: str) -> str:
        port = "" if self.port == HTTPS_PORT else f":{self.port}"
        return f"https://{self.hostname}{port}{path}"


def local_address(listen_address: str) -> str:
    """Where to reach a server listening on `listen_address` from this machine."""
    if listen_address in ("", "0.0.0.0"):
        return "127.0.0.1"
    if listen_address == "::":
        return "::1"
    return listen_address


def first_message_body(recipient: str) -> dict[str, Any]:
    return {"to": recipient, "text": FIRST_TEXT}


def health(target: Target) -> None:
    """The server answers ``GET /v1/health`` with 200.

    Raises:
        LifecycleError: no answer, a wrong certificate, or another status.
    """
    status, body = _request(target, "GET", HEALTH_PATH, {}, None)
    if status != 200:
        raise LifecycleError(f"{HEALTH_PATH} answered {status}: {body[:200]!r}",
                             step="health check", fix="see journalctl -u tidings")


def send_first_message(target: Target, secret: str, recipient: str) -> dict[str, Any]:
    """``POST /v1/messages`` as the app; returns the server's answer (``status`` SENT).

    Raises:
        LifecycleError: refused, or not SENT.
    """
    body = json.dumps(first_message_body(recipient)).encode()
    status, answer = _request(target, "POST", MESSAGES_PATH,
                              {"Authorization": f"Bearer {secret}",
                               "Content-Type": "application/json"}, body)
    try:
        doc = json.loads(answer)
    except ValueError:
        doc = {}
    if status != 201 or not isinstance(doc, dict) or doc.get("status") != "SENT":
        raise LifecycleError(f"{MESSAGES_PATH} answered {status}: {answer[:300]!r}",
                             step="first message", fix="see journalctl -u tidings")
    return doc


def curl_command(target: Target, recipient: str) -> str:
    """The first-message request as a shell command (the secret from `SECRET_VARIABLE`)."""
    words = ["curl", "-sS", "--fail-with-body"]
    if target.self_signed and target.pin:
        words += ["--insecure", "--pinnedpubkey", target.pin]
    words.append(target.url(MESSAGES_PATH))
    parts = [" ".join(shlex.quote(w) for w in words),
             f'-H "Authorization: Bearer ${SECRET_VARIABLE}"',
             "-H 'Content-Type: application/json'",
             "-d " + shlex.quote(json.dumps(first_message_body(recipient)))]
    return " \\\n  ".join(parts)


class _Connection(http.client.HTTPSConnection):
    """HTTPS to `address` while naming `server_name` (SNI), the served key pinned."""

    def __init__(self, target: Target, context: ssl.SSLContext) -> None:
        super().__init__(target.hostname, target.port, timeout=TIMEOUT_S, context=context)
        self._target = target
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self._target.address, self._target.port), TIMEOUT_S)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self._target.hostname)
        if self._target.pin:
            der = self.sock.getpeercert(binary_form=True) or b""
            served = pin_of(x509.load_der_x509_certificate(der)) if der else "none"
            if served != self._target.pin:
                self.sock.close()
                raise LifecycleError(f"the server serves another certificate (key {served},"
                                     f" expected {self._target.pin})", step="health check",
                                     fix="is another server on this port?")


def _request(target: Target, method: str, path: str, headers: dict[str, str],
             body: bytes | None) -> tuple[int, bytes]:
    context = ssl.create_default_context()
    # Not verified against a CA (the certificate may be self-signed or still being
    # obtained); pinned instead when its key is known (`Target.pin`).
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    conn = _Connection(target, context)
    where = f"{target.address}:{target.port}"
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(MAX_ANSWER_BYTES)
    except (OSError, http.client.HTTPException) as exc:
        raise LifecycleError(f"no answer from {where}: {exc}", step=f"{method} {path}",
                             fix="see journalctl -u tidings") from None
    finally:
        conn.close()

