"""The certificate manager against a real ACME CA (pebble): issue, serve, verify."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.certs.conftest import MakePebble
from tests.certs.live import (
    HOSTNAME,
    SERVING,
    acme_toml,
    cert_status,
    curl_health,
    openssl_verify,
    start_server,
    wait_for_output,
    write_roots,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("challenge", "redirect"), [("http-01", True),
                                                      ("tls-alpn-01", False)])
def test_issue_and_serve_a_trusted_certificate(make_pebble: MakePebble, data_dir: Path,
                                               tmp_path: Path, challenge: str,
                                               redirect: bool) -> None:
    # pebble's defaults left on: 5 % of nonces refused (RFC 8555 §6.5 retries).
    pebble = make_pebble()
    server = start_server(data_dir, pebble, acme_toml(pebble, challenge=challenge,
                                                      redirect=redirect))
    code = None
    try:
        output = wait_for_output(server, SERVING)
        assert "serving the self-signed certificate until ACME obtains one" in output
        roots = write_roots(pebble, tmp_path)
        openssl_verify(server.port, roots)
        assert curl_health(server.port, roots)["status"] == "ok"
        status = cert_status(data_dir)
        assert status["serving"] == "acme"
        assert status["hostnames"] == [HOSTNAME]
        assert status["issuer"] == pebble.directory_url
        assert status["last_error"] is None
        assert status["not_after"] is not None
    finally:
        code = server.stop()
    assert code == 0, server.output


def test_a_restart_serves_the_stored_certificate_without_a_new_order(
        make_pebble: MakePebble, data_dir: Path, tmp_path: Path) -> None:
    pebble = make_pebble()
    toml = acme_toml(pebble, challenge="tls-alpn-01", redirect=False)
    server = start_server(data_dir, pebble, toml)
    try:
        wait_for_output(server, SERVING)
    finally:
        server.stop()
    again = start_server(data_dir, pebble, toml)
    try:
        output = wait_for_output(again, SERVING)
        assert "ordering a certificate" not in output
        openssl_verify(again.port, write_roots(pebble, tmp_path))
    finally:
        again.stop()


def test_external_account_binding(make_pebble: MakePebble, data_dir: Path,
                                  tmp_path: Path) -> None:
    pebble = make_pebble(eab=True)
    server = start_server(data_dir, pebble, acme_toml(pebble, challenge="tls-alpn-01",
                                                      redirect=False, eab=True))
    try:
        wait_for_output(server, SERVING)
        openssl_verify(server.port, write_roots(pebble, tmp_path))
    finally:
        server.stop()


def test_a_ca_requiring_eab_without_credentials_says_what_to_set(
        make_pebble: MakePebble, data_dir: Path) -> None:
    pebble = make_pebble(eab=True)
    server = start_server(data_dir, pebble, acme_toml(pebble, challenge="tls-alpn-01",
                                                      redirect=False))
    try:
        wait_for_output(server, r"requires External Account Binding: set acme.eab_kid")
        status = cert_status(data_dir)
        assert status["serving"] == "self-signed"
        assert "External Account Binding" in str(status["last_error"])
        assert int(str(status["failed_attempts"])) >= 1
    finally:
        server.stop()


def test_every_hostname_rsa_on_request_and_the_next_issuer_when_one_fails(
        make_pebble: MakePebble, data_dir: Path, tmp_path: Path) -> None:
    pebble = make_pebble()
    names = (HOSTNAME, "www.tidings.test")
    toml = acme_toml(pebble, challenge="auto", redirect=True, hostnames=names,
                     acme='key_type = "rsa"').replace(
        f'issuers = ["{pebble.directory_url}"]',
        f'issuers = ["https://127.0.0.1:9/dir", "{pebble.directory_url}"]')
    server = start_server(data_dir, pebble, toml)
    try:
        output = wait_for_output(server, SERVING)
        assert "cannot reach the CA at https://127.0.0.1:9/dir" in output  # tried first
        roots = write_roots(pebble, tmp_path)
        for name in names:
            leaf = x509.load_pem_x509_certificate(
                openssl_verify(server.port, roots, hostname=name).encode())
            assert isinstance(leaf.public_key(), rsa.RSAPublicKey)
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(names)
        status = cert_status(data_dir)
        assert status["issuer"] == pebble.directory_url
        assert status["last_error"] is None
    finally:
        server.stop()


def test_http01_passes_an_allow_list_that_keeps_strangers_out(
        make_pebble: MakePebble, data_dir: Path) -> None:
    """An operator who lets only the office in (``[edge] allow``) still gets a
    certificate by HTTP-01: the CA validates from addresses no one can list.  Since
    the redirect port stands behind the edge (session 16) its allow list refused the
    validators, and every order and renewal failed (found by the session 17 review).
    Strangers now get the challenge answers there and nothing else."""
    pebble = make_pebble()
    server = start_server(data_dir, pebble, acme_toml(
        pebble, challenge="http-01", redirect=True,
        extra='[edge]\nallow = ["192.0.2.0/24"]\n'))  # not 127.0.0.1, where pebble is
    code = None
    try:
        wait_for_output(server, SERVING)
        with socket.create_connection(("127.0.0.1", pebble.http_port), timeout=10) as sock:
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: chat.tidings.test\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 403"), answer  # no redirect for a stranger
        # A reload (SIGHUP) closed the strangers it had let in for a validation: a
        # validation in progress was cut.  Only the block list may close them now.
        with socket.create_connection(("127.0.0.1", pebble.http_port), timeout=10) as sock:
            sock.sendall(b"GET /x HTTP/1.1\r\n")
            assert server.proc is not None
            server.proc.send_signal(signal.SIGHUP)
            wait_for_output(server, "edge: IP filter loaded")
            sock.sendall(b"Host: chat.tidings.test\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 403"), answer
    finally:
        code = server.stop()
    assert code == 0, server.output
