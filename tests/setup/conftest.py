"""Running `tidings setup` as the operator would: a real process, a real terminal (pexpect)."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.components import REPO

#: A name that resolves nowhere here: the wizard asks to confirm it (as behind NAT).
HOSTNAME = "chat.example.com"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


@dataclass(frozen=True)
class Site:
    """Where one wizard run writes."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "tidings.toml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "appliance", "--config", str(self.config),
                "--data-dir", str(self.data), "setup", "--no-start", *args]

    def run(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Unattended, with no terminal at all (a new session has no controlling tty)."""
        done = subprocess.run(self.argv(*args), capture_output=True, text=True, cwd=REPO,
                              env=ENV, stdin=subprocess.DEVNULL, start_new_session=True,
                              timeout=120, check=False)
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def spawn(self, *args: str, shell_prefix: str = "") -> pexpect.spawn:
        """Through a real terminal; `shell_prefix` e.g. ``echo x |`` pipes stdin as well."""
        argv = self.argv(*args)
        if shell_prefix:
            command = shell_prefix + " " + " ".join(_quote(a) for a in argv)
            child = pexpect.spawn("/bin/sh", ["-c", command], cwd=str(REPO), env=ENV,
                                  encoding="utf-8", timeout=60)
        else:
            child = pexpect.spawn(argv[0], argv[1:], cwd=str(REPO), env=ENV,
                                  encoding="utf-8", timeout=60)
        return child


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def free_port() -> int:
    """A port free right now (the wizard's bind test must find it free)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port this test process listens on, on every IPv4 address."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


def make_cert(directory: Path, names: list[str], *, days: tuple[int, int] = (-1, 30),
              stem: str = "site") -> CertFiles:
    """A self-issued certificate for `names`, valid from/until `days` relative to now."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=days[0]))
            .not_valid_after(now + dt.timedelta(days=days[1]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    files = CertFiles(directory / f"{stem}.crt", directory / f"{stem}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    files.key.chmod(0o600)
    return files


def secret_of(output: str) -> str:
    """The app secret the wizard showed (the line after "shown this once")."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if "shown this once" in line:
            return lines[i + 1].strip()
    raise AssertionError("no secret shown:\n" + output)


def curl_of(output: str) -> str:
    """The first-message command the wizard printed (its continuation lines joined)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("curl "))
    command = []
    for line in lines[start:]:
        command.append(line.strip().removesuffix("\\"))
        if not line.rstrip().endswith("\\"):
            break
    return " ".join(command)
