"""Sign and write a release directory: the Python half of packaging/release.sh.

    TIDINGS_SIGNING_KEY=key.pem python packaging/release.py pubkey
    TIDINGS_SIGNING_KEY=key.pem python packaging/release.py write \\
        --version 1.2.0 --exe dist/tidings --out releases [--upgrades-from 1.0.0] [--replace]

The signing key (Ed25519, PKCS8 PEM, unencrypted) is read from the file named
by TIDINGS_SIGNING_KEY and never printed.  The installer template and the
units come from this checkout (installer/install.sh, systemd/*.service and
systemd/*.socket).  Formats: appliance/release/__init__.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import stat
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This checkout's appliance package, whatever the interpreter has installed.
sys.path.insert(0, str(ROOT))

from cryptography.exceptions import UnsupportedAlgorithm  # noqa: E402

from appliance.errors import ReleaseError  # noqa: E402
from appliance.release.manifest import parse_version  # noqa: E402
from appliance.release.publish import (  # noqa: E402
    ARCHES,
    ReleaseInputs,
    default_upgrades_from,
    write_release,
)
from appliance.release.signature import public_pem  # noqa: E402

KEY_ENV = "TIDINGS_SIGNING_KEY"
MAX_KEY_BYTES = 16 * 1024


def signing_key() -> bytes:
    """The private key's PEM from the file TIDINGS_SIGNING_KEY names."""
    path = os.environ.get(KEY_ENV)
    if not path:
        raise ReleaseError(f"{KEY_ENV} is not set: name the Ed25519 signing key's PEM file")
    try:
        mode = os.stat(path).st_mode
        with open(path, "rb") as handle:
            pem = handle.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise ReleaseError(f"{KEY_ENV}: cannot read the signing key: {exc.strerror}") from None
    if len(pem) > MAX_KEY_BYTES:
        raise ReleaseError(f"{KEY_ENV}: the file is too large to be a key")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"release.py: warning: the signing key {path} is readable by others"
              " (chmod 600 it)", file=sys.stderr)
    try:
        public_pem(pem)  # refuses anything but an Ed25519 private key
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The library's message is not repeated: it could quote the file.
        raise ReleaseError(f"{KEY_ENV}: not an unencrypted Ed25519 private key"
                           " (PKCS8 PEM)") from None
    return pem


def check_versions(version: str, upgrades_from: str | None) -> None:
    """Refuse a malformed version, or a floor newer than the release, before a build."""
    oldest = upgrades_from or default_upgrades_from(version)
    if parse_version(oldest) > parse_version(version):
        raise ReleaseError(f"upgrades_from {oldest} is newer than the release {version}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="release.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pubkey = commands.add_parser(
        "pubkey", help="check the key (and a version), print the public key (PEM)")
    pubkey.add_argument("--version", help="check that this is a release version")
    pubkey.add_argument("--upgrades-from", help="check it too")
    write = commands.add_parser("write", help="write OUT/VERSION/ and OUT/latest")
    write.add_argument("--version", required=True)
    write.add_argument("--exe", required=True, type=Path, help="the one-file executable")
    write.add_argument("--out", required=True, type=Path)
    write.add_argument("--upgrades-from", help="default: MAJOR.0.0 of --version")
    write.add_argument("--arch", default=ARCHES.get(platform.machine(), platform.machine()))
    write.add_argument("--replace", action="store_true", help="re-sign an existing release")
    args = parser.parse_args(argv)
    try:
        key = signing_key()
        if args.command == "pubkey":
            if args.version:
                check_versions(args.version, args.upgrades_from)
            sys.stdout.write(public_pem(key).decode("ascii"))
            return 0
        units = sorted([*ROOT.glob("systemd/*.service"), *ROOT.glob("systemd/*.socket")])
        inputs = ReleaseInputs(
            version=args.version, executable=args.exe, arch=args.arch,
            installer=ROOT / "installer" / "install.sh", units=tuple(units),
            upgrades_from=args.upgrades_from or default_upgrades_from(args.version))
        target = write_release(args.out, inputs, key, replace=args.replace)
    except ReleaseError as exc:
        print(f"release.py: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {target} (upgrades from {inputs.upgrades_from})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
