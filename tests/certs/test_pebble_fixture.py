"""The pebble fixture works: driven by certbot's `acme` client directly (guide §6.1).

Not the appliance's ACME client: these tests prove the CA the certificate
tests run against (directory, EAB, one full HTTP-01 issuance whose chain
verifies against the CA's roots, DNS overrides, restarts).  The CAs here
refuse no good nonces (``nonce_reject=0``): `acme` retries a badNonce only
once, and pebble's default 5 % would fail about one run in forty of a flow
this long; the appliance's client is tested with the default elsewhere.
"""

from __future__ import annotations

import datetime as dt
import http.server
import itertools
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import josepy
import pytest
import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from tests.certs.conftest import MakePebble
from tests.support import pebble as pebble_module
from tests.support.pebble import Pebble

HOSTNAME = "chat.tidings.example"


class Http01Responder:
    """A tiny HTTP server answering ``/.well-known/acme-challenge/<token>`` (RFC 8555 §8.3)."""

    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}
        self.requests: list[str] = []
        answers, seen = self.answers, self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                body = answers.get(self.path)
                self.send_response(404 if body is None else 200)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # quiet: pytest shows the assertion, not the access log

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def responder() -> Iterator[Http01Responder]:
    r = Http01Responder()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests would send 127.0.0.1 through a configured HTTP(S) proxy.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def acme_client(pebble: Pebble, monkeypatch: pytest.MonkeyPatch
                ) -> tuple[client.ClientV2, JWKEC]:
    """An `acme` client with a fresh ES256 account key, trusting pebble's listener."""
    # ClientNetwork forces verify=True; requests then reads REQUESTS_CA_BUNDLE (guide §6.1).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", pebble.ca_bundle)
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(key, alg=ES256, user_agent="tidings-tests")
    directory = client.ClientV2.get_directory(pebble.directory_url, net)
    return client.ClientV2(directory, net), key


def register(acme: client.ClientV2, key: JWKEC, pebble: Pebble | None = None
             ) -> messages.RegistrationResource:
    eab = None
    if pebble is not None:
        eab = messages.ExternalAccountBinding.from_data(
            account_public_key=key.public_key(), kid=pebble.eab_kid,
            hmac_key=pebble.eab_hmac_key, directory=acme.directory)
    return acme.new_account(messages.NewRegistration.from_data(
        email="ops@tidings.example", terms_of_service_agreed=True,
        external_account_binding=eab))


def issue(acme: client.ClientV2, key: JWKEC, responder: Http01Responder,
          hostname: str = HOSTNAME) -> str:
    """One HTTP-01 order for `hostname` (guide §6.1 steps 4-6); the full chain PEM."""
    cert_key = ec.generate_private_key(ec.SECP256R1())
    csr_pem = crypto_util.make_csr(cert_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), [hostname])
    order = acme.new_order(csr_pem)
    for authz in order.authorizations:
        if authz.body.status == messages.STATUS_VALID:
            continue  # reused (PEBBLE_AUTHZREUSE)
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
        response, validation = challb.chall.response_and_validation(key)
        responder.answers[challb.chall.path] = validation.encode("ascii")
        acme.answer_challenge(challb, response)
    deadline = dt.datetime.now() + dt.timedelta(seconds=30)
    final = acme.poll_and_finalize(order, deadline)
    assert final.fullchain_pem is not None
    fullchain: str = final.fullchain_pem
    return fullchain


def split_pem(pem: str) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    return [part.strip() + "\n" + marker + "\n" for part in pem.split(marker) if part.strip()]


def openssl_verify(tmp_path: Path, pebble: Pebble, fullchain: str) -> subprocess.CompletedProcess[
        str]:
    leaf, *intermediates = split_pem(fullchain)
    (tmp_path / "roots.pem").write_text(pebble.roots_pem())
    (tmp_path / "untrusted.pem").write_text("".join(intermediates))
    (tmp_path / "leaf.pem").write_text(leaf)
    return subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "roots.pem"),
                           "-untrusted", str(tmp_path / "untrusted.pem"),
                           str(tmp_path / "leaf.pem")],
                          capture_output=True, text=True, check=False, cwd=tmp_path)


# --- the tests ---------------------------------------------------------------------------


def test_directory_is_served_over_trusted_https(make_pebble: MakePebble,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pebble = make_pebble(nonce_reject=0)
    acme, _key = acme_client(pebble, monkeypatch)
    for resource in ("newNonce", "newAccount", "newOrder", "revokeCert", "keyChange"):
        assert acme.directory[resource].startswith(f"https://127.0.0.1:{pebble.acme_port}/")
    assert not acme.external_account_required()
    # pebble 2.4.0 predates ARI (RFC 9773): no renewalInfo in its directory.
    assert "renewalInfo" not in acme.directory.to_partial_json()
    # Without the listener's CA, the same request is refused.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(pebble.directory_url, timeout=10)


def test_eab_is_required_and_accepted(make_pebble: MakePebble,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pebble = make_pebble(eab=True, nonce_reject=0)
    acme, key = acme_client(pebble, monkeypatch)
    assert acme.external_account_required()
    with pytest.raises(messages.Error) as refused:
        register(acme, key)
    assert refused.value.typ == "urn:ietf:params:acme:error:externalAccountRequired"

    regr = register(acme, key, pebble)
    assert regr.body.status == "valid"  # Registration keeps it a str (acme 5.9)
    assert regr.uri is not None


def test_eab_with_a_wrong_key_is_refused(make_pebble: MakePebble,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pebble = make_pebble(eab=True, nonce_reject=0)
    acme, key = acme_client(pebble, monkeypatch)
    pebble.eab_hmac_key = josepy.b64.b64encode(secrets.token_bytes(32)).decode()  # not pebble's
    with pytest.raises(messages.Error) as refused:
        register(acme, key, pebble)
    assert refused.value.typ == "urn:ietf:params:acme:error:unauthorized"


def test_http01_issuance_chains_to_the_roots(make_pebble: MakePebble,
                                             responder: Http01Responder, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pebble = make_pebble(http_port=responder.port, validity_s=3600, nonce_reject=0)
    acme, key = acme_client(pebble, monkeypatch)
    register(acme, key)

    fullchain = issue(acme, key, responder)

    # pebble's VA fetched the token from the responder (it resolved the name through
    # challtestsrv to 127.0.0.1 and connected to http_port).
    assert any(path.startswith("/.well-known/acme-challenge/") for path in responder.requests)
    leaf_pem, *intermediates = split_pem(fullchain)
    assert intermediates, "the chain holds the intermediate"
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [HOSTNAME]
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert abs(lifetime.total_seconds() - 3600) <= 1  # certificateValidityPeriod
    assert intermediates[0] == pebble.intermediates_pem().strip() + "\n"

    verified = openssl_verify(tmp_path, pebble, fullchain)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith(": OK")


def test_dns_override_fails_the_challenge(make_pebble: MakePebble, responder: Http01Responder,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pebble = make_pebble(http_port=responder.port, nonce_reject=0)
    acme, key = acme_client(pebble, monkeypatch)
    register(acme, key)
    # 127.0.0.2: nothing listens on http_port there, so the VA's connection is refused.
    pebble.set_dns_a(HOSTNAME, "127.0.0.2")
    with pytest.raises(errors.ValidationError) as failed:
        issue(acme, key, responder)
    problem = failed.value.failed_authzrs[0].body.challenges[0].error
    assert problem is not None
    assert problem.typ == "urn:ietf:params:acme:error:connection"
    assert responder.requests == []

    pebble.clear_dns_a(HOSTNAME)
    assert split_pem(issue(acme, key, responder))


def test_restart_keeps_the_address_with_new_roots(make_pebble: MakePebble,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pebble = make_pebble(nonce_reject=0)
    url, roots = pebble.directory_url, pebble.roots_pem()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", pebble.ca_bundle)

    pebble.stop()
    assert not pebble.running
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url, timeout=10)

    restarted = pebble.start()
    assert restarted.running
    assert pebble.directory_url == url
    assert requests.get(url, timeout=10).json()["newAccount"]
    assert pebble.roots_pem() != roots  # regenerated on every start


def test_close_ends_both_processes(tmp_path: Path) -> None:
    pebble = Pebble(tmp_path / "ca")
    with pebble:
        children = [pebble._pebble, pebble._dns]
        assert all(c is not None and c.proc.poll() is None for c in children)
    for child in children:
        assert child is not None
        assert child.proc.returncode is not None
        assert not Path(f"/proc/{child.proc.pid}").exists()  # exited and reaped
    assert not pebble.running
    assert (tmp_path / "ca").is_dir()  # a given workdir is the caller's


def test_missing_pebble_fails_in_ci_and_skips_elsewhere(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pebble_module, "PEBBLE", tmp_path / "no-pebble")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-pebble not found"):
        Pebble(tmp_path / "ca")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no-pebble not found"):
        Pebble(tmp_path / "ca")


def test_a_port_taken_in_between_is_retried(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process takes the port between free_port() and the child's bind: pebble
    # exits, challtestsrv logs and runs on; both are started again on other ports.
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        taken = tcp.getsockname()[1]
        udp.bind(("127.0.0.1", taken))  # the DNS server binds UDP and TCP
        real, calls = pebble_module.free_port, itertools.count(1)

        def racy_free_port() -> int:
            # Calls 1 and 5: challtestsrv's DNS port, then pebble's ACME port.
            return taken if next(calls) in (1, 5) else real()

        monkeypatch.setattr(pebble_module, "free_port", racy_free_port)
        with Pebble(tmp_path / "ca", http_port=real(), tls_port=real()) as pebble:
            assert taken not in (pebble.dns_port, pebble.acme_port)
            assert next(calls) == 9  # two attempts each
            assert pebble.roots_pem().startswith("-----BEGIN CERTIFICATE-----")
            pebble.set_dns_a(HOSTNAME, "127.0.0.3")
            assert pebble_module._dns_query(HOSTNAME, pebble.dns_port, 5.0) == ["127.0.0.3"]
