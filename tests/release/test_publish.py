"""appliance.release.publish: a signed release directory, and refusals that write nothing.

A few bytes stand in for the executable: writing a release never runs it
(packaging/release.sh checks its version first; tests/packaging/test_release.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.errors import ReleaseError
from appliance.release.manifest import INSTALLER, MANIFEST, SIGNATURE, SUMS
from appliance.release.publish import (
    INSTALLER_KEY_PLACEHOLDER,
    INSTALLER_VERSION_PLACEHOLDER,
    LATEST,
    ReleaseInputs,
    default_upgrades_from,
    installer_text,
    point_latest,
    write_release,
)
from appliance.release.signature import load_public_keys, new_private_pem, public_pem
from appliance.release.verify import check_file, verified_manifest

TEMPLATE = (f"#!/bin/sh\nRELEASE_VERSION='{INSTALLER_VERSION_PLACEHOLDER}'\n"
            f"PUBLIC_KEY='{INSTALLER_KEY_PLACEHOLDER}'\nmain \"$@\"\n")


@pytest.fixture
def inputs(tmp_path: Path) -> ReleaseInputs:
    src = tmp_path / "src"
    src.mkdir()
    (src / "tidings").write_bytes(b"\x7fELF stand-in")
    (src / "install.sh").write_text(TEMPLATE)
    for unit in ("tidings.service", "tidings.socket"):
        (src / unit).write_text(f"[Unit]\nDescription={unit}\n")
    return ReleaseInputs(version="1.2.3", executable=src / "tidings", arch="amd64",
                         installer=src / "install.sh",
                         units=(src / "tidings.service", src / "tidings.socket"),
                         upgrades_from="1.0.0")


def test_written_release_verifies(inputs: ReleaseInputs, tmp_path: Path) -> None:
    key = new_private_pem()
    out = tmp_path / "out"
    target = write_release(out, inputs, key)
    assert target == out / "1.2.3"
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [INSTALLER, MANIFEST, SUMS, SIGNATURE, "tidings-linux-amd64", "tidings.service",
         "tidings.socket"])
    manifest, sums = verified_manifest((target / SUMS).read_bytes(),
                                       (target / SIGNATURE).read_bytes(),
                                       (target / MANIFEST).read_bytes(),
                                       load_public_keys(public_pem(key)))
    assert (manifest.version, manifest.upgrades_from) == ("1.2.3", "1.0.0")
    for name, entry in manifest.files.items():
        check_file(target / name, entry.sha256, entry.size)
    assert MANIFEST in sums
    assert (target / "tidings-linux-amd64").stat().st_mode & 0o777 == 0o755
    assert (target / "tidings.service").stat().st_mode & 0o777 == 0o644
    assert public_pem(key).decode().strip() in (target / INSTALLER).read_text()
    assert (out / LATEST).readlink() == Path("1.2.3")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_installer_text_fills_both_placeholders() -> None:
    text = installer_text(TEMPLATE, "2.0.0", b"-----BEGIN PUBLIC KEY-----\nAAAA\n"
                                             b"-----END PUBLIC KEY-----\n")
    assert "RELEASE_VERSION='2.0.0'" in text
    assert "PUBLIC_KEY='-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----'" in text
    assert "@TIDINGS" not in text


@pytest.mark.parametrize("template", [
    "no placeholders", TEMPLATE + TEMPLATE, TEMPLATE.replace(INSTALLER_VERSION_PLACEHOLDER, ""),
])
def test_installer_template_needs_each_placeholder_once(template: str) -> None:
    with pytest.raises(ReleaseError, match="exactly once"):
        installer_text(template, "1.0.0", b"key")


@pytest.mark.parametrize(("change", "message"), [
    ({"upgrades_from": "1.3.0"}, "upgrades_from 1.3.0 is newer than the release 1.2.3"),
    ({"upgrades_from": "1.3"}, "not a release version"),
    ({"version": "v1.2.3"}, "not a release version"),
    ({"arch": "riscv64"}, "unknown architecture"),
])
def test_bad_inputs_write_nothing(inputs: ReleaseInputs, tmp_path: Path,
                                  change: dict[str, str], message: str) -> None:
    bad = ReleaseInputs(**{**{f: getattr(inputs, f) for f in ReleaseInputs.__slots__},
                           **change})
    with pytest.raises(ReleaseError, match=re.escape(message)):
        write_release(tmp_path / "out", bad, new_private_pem())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["sshd.service", "tidings.timer", "tidings/../x.service",
                                  "Tidings.service"])
def test_only_tidings_units_are_shipped(inputs: ReleaseInputs, tmp_path: Path,
                                        name: str) -> None:
    unit = tmp_path / "unit"
    unit.mkdir()
    (unit / Path(name).name).write_text("[Unit]\n")
    bad = ReleaseInputs(inputs.version, inputs.executable, inputs.arch, inputs.installer,
                        (*inputs.units, unit / Path(name).name), inputs.upgrades_from)
    with pytest.raises(ReleaseError, match="not a tidings unit name"):
        write_release(tmp_path / "out", bad, new_private_pem())


def test_an_existing_release_is_replaced_only_on_request(inputs: ReleaseInputs,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_release(out, inputs, new_private_pem())
    before = (out / "1.2.3" / SIGNATURE).read_bytes()
    with pytest.raises(ReleaseError, match="never rewritten in place"):
        write_release(out, inputs, new_private_pem())
    assert (out / "1.2.3" / SIGNATURE).read_bytes() == before
    other = new_private_pem()
    write_release(out, inputs, other, replace=True)
    verified_manifest((out / "1.2.3" / SUMS).read_bytes(),
                      (out / "1.2.3" / SIGNATURE).read_bytes(),
                      (out / "1.2.3" / MANIFEST).read_bytes(),
                      load_public_keys(public_pem(other)))
    assert sorted(p.name for p in out.iterdir()) == ["1.2.3", LATEST]


def test_a_key_that_is_not_ed25519_is_refused(inputs: ReleaseInputs, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(ReleaseError, match="not an Ed25519 private key"):
        write_release(tmp_path / "out", inputs, pem)
    assert not (tmp_path / "out").exists()


def test_latest_is_the_newest_version_by_number(tmp_path: Path) -> None:
    for name in ("1.9.0", "1.10.0", "1.2.30", ".2.0.0.partial", "tampered-x", "notes"):
        (tmp_path / name).mkdir()
    assert point_latest(tmp_path) == "1.10.0"
    assert (tmp_path / LATEST).readlink() == Path("1.10.0")
    assert point_latest(tmp_path, "1.9.0") == "1.9.0"
    assert (tmp_path / LATEST).readlink() == Path("1.9.0")
    with pytest.raises(ReleaseError, match=r"no release 3\.0\.0"):
        point_latest(tmp_path, "3.0.0")


def test_latest_that_is_a_directory_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "1.0.0").mkdir()
    (tmp_path / LATEST).mkdir()
    with pytest.raises(ReleaseError, match="not a symlink"):
        point_latest(tmp_path)
    assert (tmp_path / LATEST).is_dir()


def test_no_release_at_all(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="no release in"):
        point_latest(tmp_path)


@pytest.mark.parametrize(("version", "floor"), [
    ("1.2.3", "1.0.0"), ("2.0.0", "2.0.0"), ("0.9.1", "0.0.0"),
])
def test_default_upgrades_from_is_the_major_versions_first(version: str, floor: str) -> None:
    assert default_upgrades_from(version) == floor
