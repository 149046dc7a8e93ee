"""`tidings setup` through a real terminal (pexpect), and the server it configures.

The wizard runs with ``--no-start`` (no systemd here); the test then starts
`tidings serve` on the written configuration (ports overridden to 0) and sends
the first message with the very `curl` command the wizard printed, and with
`appliance.setup.probe` (the code the systemd path runs after the start).
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pexpect
import pytest
from cryptography import x509

from appliance.config import load_config
from appliance.setup import probe
from appliance.setup.certificate import pin_of
from tests.setup.conftest import HOSTNAME, Site, curl_of, free_port, secret_of
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


def _finish(child: pexpect.spawn, log: io.StringIO) -> str:
    child.expect(pexpect.EOF)
    child.close()
    output = log.getvalue()
    assert child.exitstatus == 0, output
    return output


def _serve(site: Site) -> ServerProcess:
    server = ServerProcess(site.data, "--redirect-port", "-1", command=[
        sys.executable, "-m", "appliance", "--config", str(site.config)])
    server.start()
    return server


def _run_printed_curl(output: str, configured_port: int, served_port: int,
                      secret: str) -> dict[str, object]:
    """The printed command, unchanged but for where the name connects (no DNS here)."""
    command = curl_of(output).removeprefix("curl ")
    route = f"{HOSTNAME}:{configured_port}:127.0.0.1:{served_port}"
    done = subprocess.run(f"curl --connect-to {route} {command}", shell=True,
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, probe.SECRET_VARIABLE: secret}, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_questions_on_the_terminal_write_a_config_the_server_runs_and_the_secret_works(
        site: Site) -> None:
    port = free_port()
    log = io.StringIO()
    child = site.spawn()
    child.logfile_read = log
    child.expect_exact("Public hostname (the DNS name clients connect to): ")
    child.sendline("192.0.2.7")  # refused, then asked again
    child.expect_exact("hostname: '192.0.2.7' is an IP address, not a hostname")
    child.expect_exact("Public hostname")
    child.sendline(HOSTNAME)
    child.expect_exact(f"{HOSTNAME} does not resolve")
    child.expect_exact(f"Use {HOSTNAME} anyway? [y/N]: ")
    child.sendline("y")
    child.expect_exact("self-signed [acme]: ")
    child.sendline("self-signed")
    child.expect_exact("REST API) [443]: ")
    child.sendline(str(port))
    child.expect_exact("'none' for none) [80]: ")
    child.sendline("none")
    child.expect_exact("or a mariadb:// URL [sqlite]: ")
    child.sendline("")
    child.expect_exact("Name of the first app: ")
    child.sendline("myapp")
    child.expect_exact("Does this look right? [Y/n]: ")
    child.sendline("")
    output = _finish(child, log)

    assert stat.S_IMODE(site.config.stat().st_mode) == 0o640
    config = load_config(site.config)
    assert (config.server.hostname, config.server.port, config.server.redirect_port) == \
        (HOSTNAME, port, -1)
    assert config.server.host == ""
    assert config.storage.data_dir == site.data
    assert config.storage.database == "sqlite"
    assert (config.tls.cert, config.acme.hostnames) == ("", ())
    secret = secret_of(output)
    assert secret.startswith("tds_")

    server = _serve(site)
    try:
        sent = _run_printed_curl(output, port, server.port, secret)
        assert sent["status"] == "SENT"
        pin = pin_of(_served_certificate(site.data))
        target = probe.Target("127.0.0.1", server.port, HOSTNAME, pin, self_signed=True)
        probe.health(target)
        assert probe.send_first_message(target, secret, "welcome")["status"] == "SENT"
    finally:
        server.stop()


def _served_certificate(data: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((data / "tls" / "self-signed.crt").read_bytes())


def test_a_rerun_offers_the_current_values_and_changes_only_what_the_operator_changes(
        site: Site) -> None:
    first_port, new_port = free_port(), free_port()
    site.run("--yes", "--hostname", HOSTNAME, "--hostname-not-local-ok", "--tls",
             "self-signed", "--port", str(first_port), "--http-port", "none", "--app", "myapp",
             check=True)
    annotated = ("# the operator's own note, kept\n" + site.config.read_text()
                 + "\n[limits]\nmax_devices = 7  # mine, kept\n")
    site.config.write_text(annotated)

    log = io.StringIO()
    child = site.spawn()
    child.logfile_read = log
    for default in (f"[{HOSTNAME}]: ", "[self-signed]: "):
        child.expect_exact(default)
        child.sendline("")
    child.expect_exact(f"[{first_port}]: ")
    child.sendline(str(new_port))
    for default in ("[none]: ", "[sqlite]: ", "[myapp]: ", "[Y/n]: "):
        child.expect_exact(default)
        child.sendline("")
    output = _finish(child, log)

    assert f"Use {HOSTNAME} anyway" not in output  # confirmed when it was configured
    assert "app 'myapp' exists: left as it is, its secrets unchanged" in output
    assert "shown this once" not in output
    assert f"wrote {site.config}: server.port" in output
    assert site.config.read_text() == annotated.replace(f"port = {first_port}\n",
                                                        f"port = {new_port}\n")


def test_prompts_come_from_the_terminal_when_stdin_is_a_pipe(site: Site) -> None:
    log = io.StringIO()
    child = site.spawn("--hostname", HOSTNAME, "--hostname-not-local-ok", "--tls",
                       "self-signed", "--port", str(free_port()), "--http-port", "none",
                       "--database", "sqlite", shell_prefix="printf 'from-the-pipe\\n' |")
    child.logfile_read = log
    child.expect_exact("Name of the first app: ")
    child.sendline("typed")
    child.expect_exact("Does this look right? [Y/n]: ")
    child.sendline("y")
    output = _finish(child, log)
    assert "app 'typed' created" in output
    assert "from-the-pipe" not in output


def test_no_terminal_at_all_lists_the_flags_of_what_is_missing(site: Site) -> None:
    done = site.run()
    assert done.returncode == 2
    for flag in ("hostname: no answer (give --hostname", "acme_email: no answer (give"
                 " --acme-email", "app: no answer (give --app"):
        assert flag in done.stderr
    assert not site.config.exists()
    assert not site.data.exists()


def test_an_answers_file_runs_unattended_and_print_answers_gives_it_back(site: Site) -> None:
    port = free_port()
    answers = site.root / "answers.toml"
    answers.write_text(f'hostname = "{HOSTNAME}"\nhostname_not_local_ok = true\n'
                       f'tls = "self-signed"\nport = {port}\nhttp_port = "none"\n'
                       'database = "sqlite"\napp = "fromfile"\n')
    done = site.run("--answers", str(answers), "--yes", check=True)
    assert "app 'fromfile' created" in done.stdout
    assert load_config(site.config).server.port == port

    printed = site.run("--print-answers", check=True).stdout
    tree = tomllib.loads(printed)
    assert tree == {"hostname": HOSTNAME, "tls": "self-signed", "port": port,
                    "http_port": "none", "database": "sqlite", "app": "fromfile",
                    "listen_address": ""}
    again = site.root / "again.toml"
    again.write_text(printed)
    rerun = site.run("--answers", str(again), "--yes", check=True)
    assert f"{site.config} unchanged" in rerun.stdout
    assert "app 'fromfile' exists" in rerun.stdout


def test_a_flag_beats_the_answers_file_which_beats_the_existing_configuration(
        site: Site) -> None:
    existing, from_file, from_flag = free_port(), free_port(), free_port()
    base = ("--yes", "--hostname", HOSTNAME, "--hostname-not-local-ok", "--tls", "self-signed",
            "--app", "myapp")
    site.run(*base, "--port", str(existing), "--http-port", str(free_port()), check=True)
    answers = site.root / "answers.toml"
    answers.write_text(f"port = {from_file}\n")
    site.run(*base, "--answers", str(answers), "--port", str(from_flag), check=True)
    assert load_config(site.config).server.port == from_flag
    site.run(*base, "--answers", str(answers), check=True)
    assert load_config(site.config).server.port == from_file
    http_port = load_config(site.config).server.redirect_port
    site.run(*base, check=True)  # nothing says: the existing value stays
    config = load_config(site.config)
    assert (config.server.port, config.server.redirect_port) == (from_file, http_port)


def test_no_at_the_summary_asks_every_question_again(site: Site) -> None:
    port = free_port()
    log = io.StringIO()
    child = site.spawn("--hostname", HOSTNAME, "--hostname-not-local-ok", "--tls",
                       "self-signed", "--port", str(port), "--http-port", "none",
                       "--database", "sqlite", "--app", "first")
    child.logfile_read = log
    child.expect_exact("Does this look right? [Y/n]: ")
    child.sendline("n")
    for default in (f"[{HOSTNAME}]: ", "[self-signed]: ", f"[{port}]: ", "[none]: ",
                    "[sqlite]: "):
        child.expect_exact(default)
        child.sendline("")
    child.expect_exact("Name of the first app [first]: ")
    child.sendline("second")
    child.expect_exact("first app  second")
    child.expect_exact("Does this look right? [Y/n]: ")
    child.sendline("yes")
    output = _finish(child, log)
    assert "app 'second' created" in output
    assert "app 'first'" not in output
