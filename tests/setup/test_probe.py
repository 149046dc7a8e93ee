"""Health and the first message against a real server (the calls the systemd path makes)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from cryptography import x509

from appliance.errors import LifecycleError
from appliance.setup import probe
from appliance.setup.certificate import pin_of
from tests.setup.conftest import HOSTNAME, CertFiles, Site, free_port, make_cert, secret_of
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def configured(site: Site) -> Iterator[tuple[ServerProcess, CertFiles, str]]:
    """A server on a wizard-written configuration with the operator's own certificate."""
    files = make_cert(site.root, [HOSTNAME])
    done = site.run("--yes", "--hostname", HOSTNAME, "--hostname-not-local-ok", "--tls", "files",
                    "--cert", str(files.cert), "--key", str(files.key), "--port",
                    str(free_port()), "--http-port", "none", "--app", "probed", check=True)
    server = ServerProcess(site.data, "--redirect-port", "-1", command=[
        sys.executable, "-m", "appliance", "--config", str(site.config)])
    server.start()
    try:
        yield server, files, secret_of(done.stdout)
    finally:
        server.stop()


def _target(server: ServerProcess, pin: str) -> probe.Target:
    return probe.Target("127.0.0.1", server.port, HOSTNAME, pin)


def test_health_and_the_first_message_with_the_served_key_pinned(
        configured: tuple[ServerProcess, CertFiles, str]) -> None:
    server, files, secret = configured
    target = _target(server, pin_of(x509.load_pem_x509_certificate(files.cert.read_bytes())))
    probe.health(target)
    answer = probe.send_first_message(target, secret, "welcome")
    assert answer["status"] == "SENT"
    assert isinstance(answer["id"], int)


def test_another_certificate_or_a_wrong_secret_fails_the_step(
        configured: tuple[ServerProcess, CertFiles, str]) -> None:
    server, _, secret = configured
    with pytest.raises(LifecycleError, match="serves another certificate"):
        probe.health(_target(server, "sha256//" + "A" * 43 + "="))
    with pytest.raises(LifecycleError, match=r"first message: /v1/messages answered 401"):
        probe.send_first_message(_target(server, ""), secret[:-2] + "xx", "welcome")
    with pytest.raises(LifecycleError, match=r"answered 422"):
        probe.send_first_message(_target(server, ""), secret, "nobody-here")


def test_nothing_listening_is_a_failed_health_check() -> None:
    with pytest.raises(LifecycleError, match=r"GET /v1/health: no answer from 127\.0\.0\.1"):
        probe.health(probe.Target("127.0.0.1", free_port(), HOSTNAME))


def test_the_printed_command_names_the_public_url_and_pins_only_a_self_signed_key() -> None:
    plain = probe.curl_command(probe.Target("127.0.0.1", 443, HOSTNAME, "sha256//x="), "welcome")
    assert plain.splitlines()[0] == f"curl -sS --fail-with-body https://{HOSTNAME}/v1/messages \\"
    assert '-H "Authorization: Bearer $TIDINGS_APP_SECRET"' in plain
    pinned = probe.curl_command(probe.Target("::1", 8443, HOSTNAME, "sha256//x=",
                                             self_signed=True), "welcome")
    assert (f"--insecure --pinnedpubkey sha256//x= https://{HOSTNAME}:8443/v1/messages"
            in pinned)
    assert probe.local_address("") == "127.0.0.1"
    assert probe.local_address("::") == "::1"
