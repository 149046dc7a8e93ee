"""A real ACME CA for the tests: Debian's pebble 2.4.0 and pebble-challtestsrv.

`Pebble` starts ``pebble-challtestsrv`` as the CA's DNS server (every name
answers 127.0.0.1 unless a test says otherwise, through `set_dns_a`) and
``pebble -strict`` resolving through it, both on free ports of 127.0.0.1, so
pebble's validation authority connects back to the test's own listener on
`http_port` (HTTP-01) or `tls_port` (TLS-ALPN-01).  Its HTTPS listener uses a
certificate made here (`ca_bundle` trusts it: ``REQUESTS_CA_BUNDLE`` or
``verify=``); the CA's roots are new on every start (`roots_pem`).

What pebble 2.4.0 (Debian 12) accepts, checked against the binary, its man
pages, README and example configs, and by running it:

- The config file is ``{"pebble": {...}}`` with ``listenAddress``,
  ``managementListenAddress``, ``certificate``, ``privateKey`` (paths relative
  to pebble's working directory), ``httpPort``, ``tlsPort``,
  ``ocspResponderURL``, ``externalAccountBindingRequired`` and
  ``externalAccountMACKeys`` (``{"kid-1": "<key>"}``, the layout of
  ``/usr/share/doc/pebble/examples/pebble-config-external-account-bindings.json``;
  the key is base64url without padding, as `acme`'s
  ``ExternalAccountBinding.from_data(hmac_key=...)`` takes it, verified by an
  account made with it).  ``certificateValidityPeriod`` (seconds) is not in
  the examples but is in the config struct (``CertificateValidityPeriod`` in
  ``strings /usr/bin/pebble``); Go matches JSON keys case-insensitively and
  pebble logs "Using certificate validity period of N seconds".  Default:
  157766400 s (5 years).
- Flags: ``-config``, ``-dnsserver host:port``, ``-strict`` (off by default).
- Environment: ``PEBBLE_VA_NOSLEEP``, ``PEBBLE_VA_SLEEPTIME``,
  ``PEBBLE_VA_ALWAYS_VALID``, ``PEBBLE_WFE_NONCEREJECT`` (default 5 %),
  ``PEBBLE_AUTHZREUSE`` (default 50 %), ``PEBBLE_CHAIN_LENGTH``,
  ``PEBBLE_ALTERNATE_ROOTS``, ``PEBBLE_WFE_ORDERS_PER_PAGE``.
- pebble exits when its ACME port is taken ("bind: address already in use");
  challtestsrv does not (it logs the same and runs on), so a start checks its
  log and retries on fresh ports.  pebble cannot listen on port 0.
- challtestsrv 2.4.0 has ``-http01 -https01 -tlsalpn01 -dns01 -management
  -defaultIPv4 -defaultIPv6`` and no ``-doh``.  Its management API (plain
  HTTP) takes ``POST /add-a {"host": "name.", "addresses": [...]}`` and
  ``POST /clear-a {"host": "name."}``; A answers with the default address
  otherwise, and AAAA answers are empty with ``-defaultIPv6 ""``.
- No ARI: the 2.4.0 directory has no ``renewalInfo``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.components import missing

PEBBLE = Path("/usr/bin/pebble")
CHALLTESTSRV = Path("/usr/bin/pebble-challtestsrv")
#: The one External Account Binding key id an ``eab=True`` pebble knows.
EAB_KID = "kid-1"

_HOST = "127.0.0.1"
_BIND_FAILED = "address already in use"
_START_ATTEMPTS = 5
_POLL_S = 0.02  # between readiness probes; each probe also waits on the process


class PebbleError(RuntimeError):
    """pebble or challtestsrv did not start, or a management request failed."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 free right now (bind port 0; the caller races to use it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def write_listener_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate it signed for ``localhost`` and 127.0.0.1.

    Returns (CA certificate, listener certificate, listener key) paths.  A CA of
    its own rather than one self-signed leaf: some verifiers (Python 3.13's
    default ``VERIFY_X509_STRICT``) refuse a leaf as its own trust anchor.
    """
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tidings test pebble CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(_HOST))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = (directory / "listener-ca.pem", directory / "listener.pem",
                                    directory / "listener-key.pem")
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def _dns_query(name: str, port: int, timeout_s: float) -> list[str]:
    """The A records `port` answers for `name` over UDP (RFC 1035 §4.1), [] on no answer."""
    query_id = secrets.randbits(16)
    qname = b"".join(bytes([len(label)]) + label.encode("ascii")
                     for label in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + qname + struct.pack(
        ">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        sock.sendto(packet, (_HOST, port))
        try:
            reply = sock.recv(4096)
        except (TimeoutError, ConnectionRefusedError):
            return []
    if len(reply) < 12 or struct.unpack(">H", reply[:2])[0] != query_id:
        return []
    answers = struct.unpack(">H", reply[6:8])[0]
    offset = 12 + len(qname) + 4
    found = []
    for _ in range(answers):
        if reply[offset] & 0xC0 == 0xC0:  # a compressed name: a 2-byte pointer
            offset += 2
        else:
            while reply[offset]:
                offset += reply[offset] + 1
            offset += 1
        rtype, _class, _ttl, length = struct.unpack(">HHIH", reply[offset:offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            found.append(socket.inet_ntoa(reply[offset:offset + 4]))
        offset += length
    return found


class _Child:
    """One child process with its output in a log file; stopped by its pid only."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str],
                 cwd: Path) -> None:
        self.name = name
        self.log = log
        self._out: IO[bytes] = log.open("ab")  # a restart appends to the same log
        self._offset = self._out.tell()
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=cwd)

    def output(self) -> str:
        """What this process wrote (not the earlier runs in the same log)."""
        with self.log.open("rb") as f:
            f.seek(self._offset)
            return f.read().decode(errors="replace")

    def bind_failed(self) -> bool:
        return _BIND_FAILED in self.output()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL; asserts that the process is gone."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        self._out.close()
        assert self.proc.returncode is not None, f"{self.name} (pid {self.proc.pid}) still runs"


class Pebble:
    """pebble + challtestsrv on 127.0.0.1; `start()` returns once both answer.

    Args:
        workdir: where the config, certificates and logs go (a new temporary
            directory, removed by `close()`, when None).
        http_port, tls_port: the ports pebble's VA connects to for HTTP-01 and
            TLS-ALPN-01 (on the address the name resolves to, 127.0.0.1 by
            default): the test's responder listens there.  None: a free port is
            picked (read `http_port` / `tls_port` and listen on it).
        eab: require External Account Binding, with key id `eab_kid` and
            key `eab_hmac_key`.
        validity_s: certificateValidityPeriod of issued certificates (None:
            pebble's default, 5 years).
        nosleep: PEBBLE_VA_NOSLEEP=1 (no random 0-15 s before validating).
        nonce_reject: PEBBLE_WFE_NONCEREJECT, % of good nonces refused as
            badNonce (None: pebble's default, 5).
        authz_reuse: PEBBLE_AUTHZREUSE, % of orders reusing a valid authorization
            (None: pebble's default, 50).
        env: more PEBBLE_* variables (PEBBLE_CHAIN_LENGTH, PEBBLE_VA_ALWAYS_VALID...).
        start_timeout_s: how long `start()` waits for readiness.

    Fails (CI=true) or skips the test when the binaries are not installed.
    """

    def __init__(self, workdir: Path | None = None, *, http_port: int | None = None,
                 tls_port: int | None = None, eab: bool = False, validity_s: int | None = None,
                 nosleep: bool = True, nonce_reject: int | None = None,
                 authz_reuse: int | None = None, env: dict[str, str] | None = None,
                 start_timeout_s: float = 30.0) -> None:
        for binary, package in ((PEBBLE, "pebble"), (CHALLTESTSRV, "pebble")):
            if not (binary.is_file() and os.access(binary, os.X_OK)):
                missing(f"{binary} not found (apt-get install {package}): the ACME tests need"
                        " a real pebble")
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="pebble-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port() if http_port is None else http_port
        self.tls_port = free_port() if tls_port is None else tls_port
        self.eab = eab
        #: The EAB key id and HMAC key (base64url, no padding) when `eab`.
        self.eab_kid = EAB_KID
        self.eab_hmac_key = _b64url(secrets.token_bytes(32))
        self.validity_s = validity_s
        self.start_timeout_s = start_timeout_s
        self.env = {"PEBBLE_VA_NOSLEEP": "1"} if nosleep else {}
        if nonce_reject is not None:
            self.env["PEBBLE_WFE_NONCEREJECT"] = str(nonce_reject)
        if authz_reuse is not None:
            self.env["PEBBLE_AUTHZREUSE"] = str(authz_reuse)
        self.env.update(env or {})
        ca, self._cert, self._key = write_listener_cert(self.workdir)
        #: PEM file that verifies pebble's HTTPS listeners (ACME and management).
        self.ca_bundle = str(ca)
        self._tls = ssl.create_default_context(cafile=self.ca_bundle)
        self.acme_port = self.management_port = self.dns_port = self.dns_management_port = 0
        self._pebble: _Child | None = None
        self._dns: _Child | None = None
        self._closed = False

    # --- addresses ------------------------------------------------------------------------

    @property
    def directory_url(self) -> str:
        """The ACME directory (RFC 8555 §7.1.1); 127.0.0.1 is in the listener's SAN."""
        return f"https://{_HOST}:{self.acme_port}/dir"

    @property
    def management_url(self) -> str:
        """pebble's management interface (HTTPS, same listener certificate)."""
        return f"https://{_HOST}:{self.management_port}"

    @property
    def running(self) -> bool:
        return self._pebble is not None and self._pebble.proc.poll() is None

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> Pebble:
        """Start challtestsrv (if not running) and pebble; returns once both answer.

        The first start picks free ports (retried on fresh ones if another process
        took one in between); a restart after `stop()` keeps the ports, so a
        client configured with `directory_url` finds the CA again (with new roots).

        Raises:
            PebbleError: not ready within `start_timeout_s`.
        """
        if self._closed:
            raise PebbleError("this Pebble is closed")
        if self._dns is None:
            self._start_dns()
        if self._pebble is None:
            self._start_pebble()
        return self

    def stop(self) -> None:
        """Stop pebble only (the CA goes away; DNS answers and its ports stay)."""
        child, self._pebble = self._pebble, None
        if child is not None:
            child.stop()

    def close(self) -> None:
        """Stop both processes (asserting they exited) and remove a temporary workdir."""
        self._closed = True
        try:
            self.stop()
        finally:
            dns, self._dns = self._dns, None
            if dns is not None:
                dns.stop()
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Pebble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def log(self) -> str:
        """Both processes' output so far (for failure messages)."""
        parts = []
        for name in ("challtestsrv", "pebble"):
            path = self.workdir / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def _start_dns(self) -> None:
        for _attempt in range(_START_ATTEMPTS):
            self.dns_port, self.dns_management_port = free_port(), free_port()
            child = _Child("pebble-challtestsrv", [
                str(CHALLTESTSRV), "-http01", "", "-https01", "", "-tlsalpn01", "",
                "-dns01", f"{_HOST}:{self.dns_port}",
                "-management", f"{_HOST}:{self.dns_management_port}",
                "-defaultIPv4", _HOST, "-defaultIPv6", ""],
                self.workdir / "challtestsrv.log", dict(os.environ), self.workdir)
            if self._wait(child, self._dns_ready):
                self._dns = child
                return
            child.stop()
            if not child.bind_failed():
                break
        raise PebbleError(f"pebble-challtestsrv did not start:\n{self.log()}")

    def _start_pebble(self) -> None:
        restart = self.acme_port != 0
        for _attempt in range(_START_ATTEMPTS):
            if not restart:
                self.acme_port, self.management_port = free_port(), free_port()
            config = self.workdir / "pebble-config.json"
            config.write_text(json.dumps(self.config()))
            child = _Child("pebble", [str(PEBBLE), "-config", str(config), "-dnsserver",
                                      f"{_HOST}:{self.dns_port}", "-strict"],
                           self.workdir / "pebble.log", {**os.environ, **self.env}, self.workdir)
            if self._wait(child, self._pebble_ready):
                self._pebble = child
                return
            child.stop()
            if not child.bind_failed():
                break
        raise PebbleError(f"pebble did not start:\n{self.log()}")

    def config(self) -> dict[str, Any]:
        """pebble's config file (the keys 2.4.0 reads: see the module's docstring)."""
        settings: dict[str, Any] = {
            "listenAddress": f"{_HOST}:{self.acme_port}",
            "managementListenAddress": f"{_HOST}:{self.management_port}",
            "certificate": str(self._cert),
            "privateKey": str(self._key),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": self.eab,
        }
        if self.eab:
            settings["externalAccountMACKeys"] = {self.eab_kid: self.eab_hmac_key}
        if self.validity_s is not None:
            settings["certificateValidityPeriod"] = self.validity_s
        return {"pebble": settings}

    def _wait(self, child: _Child, ready: Callable[[], bool]) -> bool:
        """Poll `ready()` until it holds (True), or the child failed or time ran out (False)."""
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if child.proc.poll() is not None or child.bind_failed():
                return False
            if ready():
                # A port taken by someone else answers too: only our log can tell.
                return not child.bind_failed()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(_POLL_S)  # the pace of the probes; ends early if it exits
        return False

    def _dns_ready(self) -> bool:
        """Management and DNS answer, and they are the same server: a fresh name set
        through the one resolves through the other."""
        probe, address = f"ready-{secrets.token_hex(6)}.test.", "127.0.0.9"
        try:
            self._dns_management("add-a", {"host": probe, "addresses": [address]})
            answered = _dns_query(probe, self.dns_port, 0.2) == [address]
            self._dns_management("clear-a", {"host": probe})
        except (OSError, PebbleError):
            return False
        return answered

    def _pebble_ready(self) -> bool:
        try:
            directory = json.loads(self._get(self.directory_url, 1.0))
            self._get(f"{self.management_url}/roots/0", 1.0)
        except (OSError, ValueError):
            return False
        return isinstance(directory, dict) and "newAccount" in directory

    # --- the CA's certificates ---------------------------------------------------------------

    def roots_pem(self, index: int = 0) -> str:
        """The CA's root certificate (new on every start), PEM, from the management port."""
        return self._get(f"{self.management_url}/roots/{index}").decode("ascii")

    def intermediates_pem(self, index: int = 0) -> str:
        """The intermediate certificate that signs the leaves, PEM."""
        return self._get(f"{self.management_url}/intermediates/{index}").decode("ascii")

    def _get(self, url: str, timeout_s: float = 10.0) -> bytes:
        with urllib.request.urlopen(url, timeout=timeout_s, context=self._tls) as response:
            body: bytes = response.read()
            return body

    # --- DNS as the CA sees it -----------------------------------------------------------------

    def set_dns_a(self, host: str, ip: str) -> None:
        """Make `host` resolve to `ip` for the CA (a challenge then goes there)."""
        self._dns_management("add-a", {"host": _fqdn(host), "addresses": [ip]})

    def clear_dns_a(self, host: str) -> None:
        """Back to the default answer (127.0.0.1) for `host`."""
        self._dns_management("clear-a", {"host": _fqdn(host)})

    def _dns_management(self, path: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"http://{_HOST}:{self.dns_management_port}/{path}", data=json.dumps(body).encode(),
            method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5.0) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise PebbleError(f"challtestsrv /{path} answered {exc.code}") from None


def _fqdn(host: str) -> str:
    return host if host.endswith(".") else f"{host}."
