"""Helpers of the live ACME tests: a `tidings serve` configured for a pebble CA,
and real TLS clients (openssl, curl) that verify what it serves."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.support.pebble import Pebble
from tests.support.server import ServerProcess

HOSTNAME = "chat.tidings.test"
#: What the server logs (appliance/certs/manager.py) when it installs a certificate,
#: places an order, and records a failed attempt.
SERVING = r"serving the certificate for"
ORDERING = r"ordering a certificate for"
FAILED = r"not obtained \(failure (\d+) in a row\)"


def acme_toml(pebble: Pebble, *, challenge: str, redirect: bool, extra: str = "",
              hostnames: tuple[str, ...] = (HOSTNAME,), eab: bool = False,
              acme: str = "") -> str:
    """A configuration that gets its certificate from `pebble`."""
    lines = ["[server]"]
    if redirect:  # pebble's VA connects to http_port for HTTP-01
        lines.append(f"redirect_port = {pebble.http_port}")
    lines += ["", "[acme]",
              f"hostnames = {json.dumps(list(hostnames))}",
              'email = "ops@tidings.test"',
              f'issuers = ["{pebble.directory_url}"]',
              f'ca_bundle = "{pebble.ca_bundle}"',
              f'challenge = "{challenge}"',
              "check_interval_s = 0.2",
              "retry_min_s = 0.5",
              "retry_max_s = 2.0",
              "attempt_timeout_s = 30"]
    if eab:
        lines += [f'eab_kid = "{pebble.eab_kid}"', f'eab_hmac_key = "{pebble.eab_hmac_key}"']
    return "\n".join(lines) + "\n" + acme + "\n" + extra


def start_server(data_dir: Path, pebble: Pebble, toml: str) -> ServerProcess:
    """`tidings serve` on pebble's TLS-ALPN-01 port (the main port, as 443 would be)."""
    server = ServerProcess.configured(data_dir, toml)
    server.start(port=pebble.tls_port)
    return server


def wait_for_output(server: ServerProcess, pattern: str, timeout_s: float = 60.0,
                    count: int = 1) -> str:
    """Wait until the server has logged `pattern` `count` times; returns the output."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        output = server.output
        if len(regex.findall(output)) >= count:
            return output
        if server.proc is not None and server.proc.poll() is not None:
            break
        time.sleep(0.05)  # polling the log the server writes; no readiness guess
    raise AssertionError(f"no {pattern!r} x{count} within {timeout_s} s:\n{server.output}")


def write_roots(pebble: Pebble, directory: Path) -> Path:
    """pebble's current root (a CAfile for openssl and curl)."""
    path = directory / f"pebble-roots-{time.monotonic_ns()}.pem"
    path.write_text(pebble.roots_pem())
    return path


def openssl_verify(port: int, roots: Path, hostname: str = HOSTNAME) -> str:
    """`openssl s_client -verify_return_error`: the served chain must verify to `roots`;
    returns the leaf certificate (PEM)."""
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", hostname,
         "-verify_hostname", hostname, "-CAfile", str(roots), "-verify_return_error",
         "-showcerts"],
        input="", capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verify return code: 0 (ok)" in result.stdout, result.stdout
    leaf = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
                     result.stdout, re.S)
    assert leaf is not None
    return leaf.group(0)


def curl_health(port: int, roots: Path, hostname: str = HOSTNAME) -> dict[str, object]:
    """curl verifying the chain and the name (no -k), over HTTP/2."""
    result = subprocess.run(
        ["curl", "-sS", "--fail", "--http2", "--cacert", str(roots), "--resolve",
         f"{hostname}:{port}:127.0.0.1", f"https://{hostname}:{port}/v1/health"],
        capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def cert_status(data_dir: Path) -> dict[str, object]:
    """`tidings cert status --json` (another process, reading the store)."""
    config = data_dir.parent / "tidings.toml"
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "--config", str(config), "--data-dir",
         str(data_dir), "cert", "status", "--json"],
        capture_output=True, text=True, timeout=60, check=True)
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def cert_cli(data_dir: Path, *args: str, check: bool = True
             ) -> subprocess.CompletedProcess[str]:
    config = data_dir.parent / "tidings.toml"
    return subprocess.run(
        [sys.executable, "-m", "appliance", "--config", str(config), "--data-dir",
         str(data_dir), "cert", *args],
        capture_output=True, text=True, timeout=120, check=check)
