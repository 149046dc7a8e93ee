"""Every check refuses a bad answer before anything is written, naming the question.

Each case runs the real command unattended; the refusal must name the
question (its answers-file key) and what to do, and neither the
configuration file nor the data directory may exist afterwards.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.config import load_config
from tests.setup.conftest import ENV, HOSTNAME, Site, free_port, make_cert
from tests.support.components import REPO
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


def _base(port: int) -> list[str]:
    return ["--yes", "--hostname", HOSTNAME, "--hostname-not-local-ok", "--tls", "self-signed",
            "--port", str(port), "--http-port", "none", "--database", "sqlite", "--app", "myapp"]


def _refused(site: Site, *overrides: str) -> str:
    """Run with the base answers, `overrides` last (click keeps an option's last value)."""
    done = site.run(*_base(free_port()), *overrides)
    assert done.returncode != 0, done.stdout
    assert not site.config.exists(), "the configuration was written despite a refusal"
    assert not site.data.exists(), "the data directory was created despite a refusal"
    return done.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nobody listens once it is closed


@pytest.mark.parametrize(("overrides", "message"), [
    (["--hostname", "192.0.2.7"], "hostname: '192.0.2.7' is an IP address, not a hostname"),
    (["--hostname", "2001:db8::7"], "hostname: '2001:db8::7' is an IP address"),
    (["--hostname", "bad_name..example.com"],
     "hostname: 'bad_name..example.com' is not a fully qualified DNS name"),
    (["--hostname", "chatbox"], "hostname: 'chatbox' is not a fully qualified DNS name"),
    (["--hostname", "localhost"], "hostname: 'localhost' names this machine only to itself"),
    (["--hostname", "app.localhost"], "hostname: 'app.localhost' names this machine only"),
    (["--tls", "tls9"], "tls: 'tls9' is not a TLS mode (give --tls one of acme, files,"
                        " self-signed)"),
    (["--tls", "acme", "--acme-email", "not-an-address"],
     "acme_email: 'not-an-address' is not an e-mail address (give --acme-email"),
    (["--tls", "acme", "--acme-email", "ops@example.com", "--hostname", "chat.internal"],
     "tls: no public certificate authority issues for chat.internal"),
    (["--tls", "acme", "--acme-email", "ops@example.com", "--port", str(free_port()),
      "--http-port", str(free_port())],
     "http_port: the certificate authority validates on port 80 (HTTP-01) or 443"),
    (["--port", "99999"], "port: 99999 in --port is not a port number (give --port 1-65535)"),
    (["--http-port", "http"], "http_port: 'http' in --http-port is not a port number"),
    (["--app", "my app!"], "app: app name must be 1-64 letters, digits"),
    (["--database", "postgres://x"], "database: must be 'sqlite', 'private', a MariaDB socket"),
    (["--listen-address", "not-an-ip"], "listen_address: 'not-an-ip' is not an IP address"),
    (["--listen-address", "192.0.2.99"],
     "listen_address: 192.0.2.99 is not an address of this machine"),
])
def test_a_bad_answer_is_refused_naming_its_question(site: Site, overrides: list[str],
                                                     message: str) -> None:
    assert message in _refused(site, *overrides)


def test_a_hostname_that_does_not_point_here_needs_the_operators_word(site: Site) -> None:
    args = [a for a in _base(free_port()) if a != "--hostname-not-local-ok"]
    done = site.run(*args)
    assert done.returncode == 2
    assert (f"hostname: {HOSTNAME} does not resolve (no A/AAAA record yet?) (point its DNS"
            " A/AAAA record at this machine, or confirm with --hostname-not-local-ok)"
            in done.stderr)
    assert not site.config.exists()


def test_a_port_in_use_is_refused_naming_the_process_that_holds_it(site: Site,
                                                                   held_port: int) -> None:
    stderr = _refused(site, "--port", str(held_port))
    assert f"port: port {held_port} is in use by" in stderr
    assert f"(pid {os.getpid()})" in stderr
    assert "choose another port with --port" in stderr
    stderr = _refused(site, "--http-port", str(held_port))
    assert f"http_port: port {held_port} is in use by" in stderr


def test_the_http_port_must_differ_from_the_main_port(site: Site) -> None:
    port = free_port()
    assert f"http_port: port {port} is already the main port" in _refused(
        site, "--port", str(port), "--http-port", str(port))


def test_an_unreachable_database_is_refused(site: Site) -> None:
    url = f"mariadb://tidings@127.0.0.1:{_closed_port()}/tidings"
    stderr = _refused(site, "--database", url)
    assert "database: cannot reach MariaDB database 'tidings' as 'tidings' on 127.0.0.1" in stderr
    assert "check the server, the account and the URL" in stderr


def test_several_bad_answers_are_listed_together(site: Site) -> None:
    stderr = _refused(site, "--hostname", "192.0.2.7", "--app", "my app!")
    assert "setup refused these answers; nothing was changed:" in stderr
    assert "hostname: '192.0.2.7' is an IP address" in stderr
    assert "app: app name must be" in stderr


def test_an_unknown_key_in_the_answers_file_is_refused(site: Site) -> None:
    answers = site.root / "answers.toml"
    answers.write_text('hostnme = "x.example.com"\n')
    stderr = _refused(site, "--answers", str(answers))
    assert "hostnme: unknown key in answers file" in stderr


# --- your own certificate ------------------------------------------------------------------


def _files(site: Site, cert: Path, key: Path) -> list[str]:
    return ["--tls", "files", "--cert", str(cert), "--key", str(key)]


def test_certificate_files_that_do_not_parse_are_refused(site: Site) -> None:
    good = make_cert(site.root, [HOSTNAME])
    junk = site.root / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    assert f"cert: {junk} does not parse as a PEM certificate" in _refused(
        site, *_files(site, junk, good.key))
    assert f"key: {junk} does not parse as a PEM private key" in _refused(
        site, *_files(site, good.cert, junk))
    missing = site.root / "missing.pem"
    assert f"cert: cannot read {missing}: No such file or directory" in _refused(
        site, *_files(site, missing, good.key))


def test_a_key_that_does_not_match_the_certificate_is_refused(site: Site) -> None:
    one = make_cert(site.root, [HOSTNAME], stem="one")
    other = make_cert(site.root, [HOSTNAME], stem="other")
    assert f"key: the key {other.key} does not belong to the certificate {one.cert}" in \
        _refused(site, *_files(site, one.cert, other.key))


def test_a_passphrase_protected_key_is_refused(site: Site) -> None:
    files = make_cert(site.root, [HOSTNAME])
    key = ec.generate_private_key(ec.SECP256R1())
    locked = site.root / "locked.key"
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"secret")))
    assert f"key: {locked} is protected by a passphrase" in _refused(
        site, *_files(site, files.cert, locked))


def test_a_certificate_for_another_name_is_refused(site: Site) -> None:
    files = make_cert(site.root, ["other.example.org", "*.example.net"])
    assert (f"cert: {files.cert} is for other.example.org, *.example.net, not {HOSTNAME}"
            f" (give --cert a certificate for {HOSTNAME}, or change --hostname)") in \
        _refused(site, *_files(site, files.cert, files.key))


def test_an_expired_or_not_yet_valid_certificate_is_refused(site: Site) -> None:
    old = make_cert(site.root, [HOSTNAME], days=(-60, -1), stem="old")
    assert f"cert: {old.cert} expired on" in _refused(site, *_files(site, old.cert, old.key))
    early = make_cert(site.root, [HOSTNAME], days=(2, 60), stem="early")
    assert f"cert: {early.cert} is not valid before" in _refused(
        site, *_files(site, early.cert, early.key))


def test_good_certificate_files_are_written_and_served(site: Site) -> None:
    files = make_cert(site.root, ["*.example.com"])
    site.run(*_base(free_port()), *_files(site, files.cert, files.key), check=True)
    config = load_config(site.config)
    assert (config.tls.cert, config.tls.key) == (str(files.cert), str(files.key))
    server = ServerProcess(site.data, "--redirect-port", "-1", command=[
        sys.executable, "-m", "appliance", "--config", str(site.config)])
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            context = ssl.create_default_context(cafile=str(files.cert))
            with context.wrap_socket(raw, server_hostname=HOSTNAME) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        server.stop()


def test_starting_without_systemd_is_refused_before_anything_is_written(site: Site) -> None:
    argv = [a for a in site.argv(*_base(free_port())) if a != "--no-start"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=ENV,
                          stdin=subprocess.DEVNULL, start_new_session=True, timeout=60,
                          check=False)
    if Path("/run/systemd/system").is_dir():  # a host with systemd: another config path
        assert "the service reads /etc/tidings/tidings.toml" in done.stderr
    else:
        assert "starting the service: this host does not run systemd (give --no-start" \
            in done.stderr
    assert done.returncode == 1
    assert not site.config.exists()
    assert not site.data.exists()
