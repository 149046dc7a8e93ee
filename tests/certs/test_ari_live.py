"""Renewal information (RFC 9773): the CA's suggested window wins over the ⅓ rule.

pebble 2.4.0 offers no ARI, so a local stand-in serves the directory (pebble's,
plus ``renewalInfo``) and the renewal information, and checks each request as
strictly as a CA would: the certificate identifier must be ``base64url(AKI) "."
base64url(serial)`` (RFC 9773 §4.1) of a certificate it issued.  Everything else
(accounts, orders, validation) is pebble's.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import ssl
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509

from tests.certs.conftest import MakePebble
from tests.certs.live import SERVING, acme_toml, cert_status, start_server, wait_for_output
from tests.support.pebble import Pebble

pytestmark = pytest.mark.slow

_CERT_ID = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def cert_id(pem: bytes) -> str:
    """RFC 9773 §4.1: base64url(keyIdentifier of the AKI) "." base64url(DER serial)."""
    cert = x509.load_pem_x509_certificate(pem)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    serial = cert.serial_number
    return _b64(aki.key_identifier) + "." + _b64(
        serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True))


class AriStandIn:
    """An HTTPS directory with ``renewalInfo``: the first certificate asked about is due
    (its window has passed), every later one is not (a window years away)."""

    def __init__(self, pebble: Pebble) -> None:
        self.pebble = pebble
        self.asked: list[str] = []
        self.refused: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/dir":
                    self._json(200, stand_in.directory())
                elif self.path.startswith("/renewal-info/"):
                    ident = self.path.removeprefix("/renewal-info/")
                    if not _CERT_ID.match(ident):
                        stand_in.refused.append(ident)
                        self._json(400, {"type": "urn:ietf:params:acme:error:malformed"})
                        return
                    stand_in.asked.append(ident)
                    self._json(200, stand_in.window(ident), retry_after="1")
                else:
                    self._json(404, {"type": "about:blank"})

            def _json(self, status: int, body: object, retry_after: str = "") -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if retry_after:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pebble._cert, pebble._key)  # its listener's certificate
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/dir"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def directory(self) -> dict[str, object]:
        ctx = ssl.create_default_context(cafile=self.pebble.ca_bundle)
        with urllib.request.urlopen(self.pebble.directory_url, context=ctx) as answer:
            directory: dict[str, object] = json.loads(answer.read())
        directory["renewalInfo"] = self.url.removesuffix("/dir") + "/renewal-info"
        return directory

    def window(self, ident: str) -> dict[str, object]:
        now = dt.datetime.now(dt.UTC)
        if ident == self.asked[0]:
            start, end = now - dt.timedelta(hours=2), now - dt.timedelta(hours=1)
        else:
            start, end = now + dt.timedelta(days=900), now + dt.timedelta(days=901)
        return {"suggestedWindow": {"start": start.isoformat().replace("+00:00", "Z"),
                                    "end": end.isoformat().replace("+00:00", "Z")}}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_the_cas_renewal_window_triggers_an_early_renewal(make_pebble: MakePebble,
                                                          data_dir: Path) -> None:
    pebble = make_pebble()  # five-year certificates: the ⅓ rule alone would wait years
    ari = AriStandIn(pebble)
    toml = acme_toml(pebble, challenge="tls-alpn-01", redirect=False).replace(
        pebble.directory_url, ari.url)
    server = start_server(data_dir, pebble, toml)
    try:
        wait_for_output(server, SERVING, 60.0, count=2)
        status = cert_status(data_dir)
        assert status["version"] == 2
        assert ari.refused == []
        first, *later = ari.asked
        assert later, "the renewed certificate is asked about too"
        assert first != later[-1]
        # The identifier is exactly the RFC 9773 one of the certificate now served.
        bundle = next((data_dir / "tls" / "acme").glob("*/fullchain.pem")).read_bytes()
        assert cert_id(bundle) == later[-1]
        assert "ordering a certificate" in server.output
        assert server.output.count("ordering a certificate") == 2
    finally:
        server.stop()
        ari.close()
