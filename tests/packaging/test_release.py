"""packaging/release.sh: the release directories it writes verify, and it refuses bad input.

The releases come from the session's `releases` fixture (tests/support/releases.py),
which runs release.sh: a full build on a cache miss, ``--exe`` on a hit.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from PyInstaller.archive.readers import CArchiveReader

from appliance.errors import VerificationError
from appliance.release.manifest import INSTALLER, MANIFEST, SIGNATURE, SUMS
from appliance.release.signature import load_public_keys, new_private_pem, public_pem
from appliance.release.verify import check_file, verified_manifest
from tests.support.components import REPO, missing
from tests.support.releases import EXE, UPGRADES_FROM, Releases, release_sh

RELEASE_SH = REPO / "packaging" / "release.sh"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} not found (apt-get install {name})")
    return path


def test_release_sh_is_clean_posix_sh() -> None:
    done = subprocess.run([tool("shellcheck"), "-s", "sh", str(RELEASE_SH)],
                          capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, "")
    done = subprocess.run([tool("dash"), "-n", str(RELEASE_SH)], capture_output=True,
                          text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.slow
@pytest.mark.parametrize("which", ["n", "n1", "broken"])
def test_release_verifies_with_openssl_and_the_appliance(releases: Releases, which: str) -> None:
    version = getattr(releases.versions, which)
    release = releases.serve_dir / version
    done = subprocess.run(
        [tool("openssl"), "pkeyutl", "-verify", "-pubin", "-inkey", str(releases.key_pub_path),
         "-rawin", "-in", str(release / SUMS), "-sigfile", str(release / SIGNATURE)],
        capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Signature Verified Successfully" in done.stdout
    done = subprocess.run([tool("sha256sum"), "--strict", "-c", SUMS], cwd=release,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout

    keys = load_public_keys(releases.key_pub_path.read_bytes())
    manifest, sums = verified_manifest((release / SUMS).read_bytes(),
                                       (release / SIGNATURE).read_bytes(),
                                       (release / MANIFEST).read_bytes(), keys)
    assert (manifest.version, manifest.upgrades_from) == (version, UPGRADES_FROM)
    every = {path.name for path in release.iterdir()}
    assert set(manifest.files) == every - {MANIFEST, SUMS, SIGNATURE}
    assert set(sums) == every - {SUMS, SIGNATURE}
    assert set(manifest.files) == {EXE, INSTALLER, *(unit.name for unit in units())}
    for name, entry in manifest.files.items():
        check_file(release / name, entry.sha256, entry.size)


def units() -> list[Path]:
    return sorted([*(REPO / "systemd").glob("*.service"), *(REPO / "systemd").glob("*.socket")])


@pytest.mark.slow
@pytest.mark.parametrize("which", ["n", "n1", "broken"])
def test_release_executable_embeds_its_version_and_key(releases: Releases, which: str) -> None:
    version = getattr(releases.versions, which)
    exe = releases.executable(version)
    said = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60,
                          check=True)
    assert said.stdout.strip() == f"tidings, version {version}"
    archive = CArchiveReader(str(exe))
    assert archive.extract("appliance/release/trusted.pem") == \
        releases.key_pub_path.read_bytes()
    assert archive.extract("appliance/RELEASE_VERSION") == f"{version}\n".encode()


@pytest.mark.slow
def test_release_ships_the_units_and_the_keyed_installer(releases: Releases) -> None:
    release = releases.serve_dir / releases.versions.n
    for unit in units():
        assert (release / unit.name).read_bytes() == unit.read_bytes()
    installer = (release / INSTALLER).read_text()
    template = (REPO / "installer" / "install.sh").read_text()
    pem = releases.key_pub_path.read_text().strip()
    assert installer == template.replace("@TIDINGS_PUBLIC_KEY@", pem).replace(
        "@TIDINGS_RELEASE_VERSION@", releases.versions.n)
    assert (release / INSTALLER).stat().st_mode & 0o777 == 0o755


@pytest.mark.slow
def test_latest_is_served_over_http(releases: Releases) -> None:
    assert (releases.serve_dir / "latest").resolve() == \
        (releases.serve_dir / releases.versions.n1).resolve()
    with urllib.request.urlopen(f"{releases.base_url}/latest/{SUMS}", timeout=10) as answer:
        served = answer.read()
    assert served == (releases.serve_dir / releases.versions.n1 / SUMS).read_bytes()
    assert releases.requests[-1] == f"/latest/{SUMS}"


@pytest.mark.slow
def test_broken_release_runs_commands_but_serve_exits_at_once(
        releases: Releases, tmp_path: Path) -> None:
    exe = releases.executable(releases.versions.broken)
    added = subprocess.run([str(exe), "--data-dir", str(tmp_path), "user", "add", "alice"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert added.returncode == 0, added.stderr
    served = subprocess.run([str(exe), "--data-dir", str(tmp_path), "serve", "--port", "0"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert served.returncode == 70
    assert "deliberately broken test release" in served.stderr


@pytest.mark.slow
def test_tampered_copies_fail_verification(releases: Releases) -> None:
    keys = load_public_keys(releases.key_pub_path.read_bytes())
    for kind, message in (("foreign-signature", "signature does not verify"),
                          ("sums-line", "signature does not verify"),
                          ("executable-byte", "sha256 does not match")):
        url = releases.tampered(kind)
        release = releases.serve_dir / url.rsplit("/", 1)[1] / releases.versions.n
        with pytest.raises(VerificationError, match=message):
            verify_release(release, keys)


def verify_release(release: Path, keys: list[Ed25519PublicKey]) -> None:
    """What `tidings upgrade` checks: the signature, the sums, then the executable."""
    manifest, _ = verified_manifest((release / SUMS).read_bytes(),
                                    (release / SIGNATURE).read_bytes(),
                                    (release / MANIFEST).read_bytes(), keys)
    entry = manifest.files[EXE]
    check_file(release / EXE, entry.sha256, entry.size)


# --- refusals (fast: they package N's executable with --exe) ------------------------------

def run_release_sh(*args: str, key: Path | None,
                   tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(REPO / ".venv" / "bin" / "python"),
           "TMPDIR": str(tmp_path)}
    if key is not None:
        env["TIDINGS_SIGNING_KEY"] = str(key)
    return subprocess.run(["sh", str(RELEASE_SH), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "key.pem"
    path.write_bytes(new_private_pem())
    path.chmod(0o600)
    return path


def secret_body(key: Path) -> str:
    """The base64 body of a private key PEM (what must never be printed)."""
    return "".join(key.read_text().splitlines()[1:-1])


def test_release_sh_refuses_to_run_without_a_key(tmp_path: Path) -> None:
    done = run_release_sh("1.0.0", str(tmp_path / "out"), key=None, tmp_path=tmp_path)
    assert done.returncode == 1
    assert "TIDINGS_SIGNING_KEY is not set" in done.stderr
    assert not (tmp_path / "out").exists()


def test_release_sh_refuses_a_key_that_is_not_ed25519_and_never_prints_it(
        tmp_path: Path) -> None:
    rsa = tmp_path / "rsa.pem"
    subprocess.run([tool("openssl"), "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:1024", "-out", str(rsa)], check=True, capture_output=True)
    done = run_release_sh("1.0.0", str(tmp_path / "out"), key=rsa, tmp_path=tmp_path)
    assert done.returncode == 1
    assert "not an Ed25519 private key" in done.stderr or "not an unencrypted Ed25519" \
        in done.stderr
    body = secret_body(rsa)
    assert body[:40] not in done.stdout + done.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("1.0",), "not a release version"),
    (("--upgrades-from", "2.0.0", "1.0.0"), "newer than the release"),
])
def test_release_sh_refuses_bad_versions_before_building(
        key: Path, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    done = run_release_sh(*args[:-1], args[-1], str(tmp_path / "out"), key=key,
                          tmp_path=tmp_path)
    assert done.returncode == 1
    assert message in done.stderr
    assert "building" not in done.stdout + done.stderr
    assert secret_body(key)[:40] not in done.stdout + done.stderr


@pytest.mark.slow
def test_release_sh_exe_must_report_the_version(
        releases: Releases, key: Path, tmp_path: Path) -> None:
    exe = releases.executable(releases.versions.n)
    done = run_release_sh("--exe", str(exe), "9.9.9", str(tmp_path / "out"), key=key,
                          tmp_path=tmp_path)
    assert done.returncode == 1
    assert f"reports 'tidings, version {releases.versions.n}', not version 9.9.9" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_release_sh_exe_defaults_and_replace(releases: Releases, key: Path,
                                            tmp_path: Path) -> None:
    exe, version, out = releases.executable(releases.versions.n), releases.versions.n, \
        tmp_path / "out"
    done = run_release_sh("--exe", str(exe), version, str(out), key=key, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert secret_body(key)[:40] not in done.stdout + done.stderr
    manifest, _ = verified_manifest((out / version / SUMS).read_bytes(),
                                    (out / version / SIGNATURE).read_bytes(),
                                    (out / version / MANIFEST).read_bytes(),
                                    load_public_keys(public_pem(key.read_bytes())))
    # The default floor: MAJOR.0.0.
    assert manifest.upgrades_from == "1.0.0"
    assert (out / "latest").readlink() == Path(version)
    # A release is never rewritten in place, unless re-signed on purpose.
    again = run_release_sh("--exe", str(exe), version, str(out), key=key, tmp_path=tmp_path)
    assert again.returncode == 1
    assert "never rewritten in place" in again.stderr
    other = tmp_path / "other.pem"
    other.write_bytes(new_private_pem())
    resigned = run_release_sh("--exe", str(exe), "--replace", version, str(out), key=other,
                              tmp_path=tmp_path)
    assert resigned.returncode == 0, resigned.stderr
    verified_manifest((out / version / SUMS).read_bytes(),
                      (out / version / SIGNATURE).read_bytes(),
                      (out / version / MANIFEST).read_bytes(),
                      load_public_keys(public_pem(other.read_bytes())))
    assert sorted(p.name for p in out.iterdir()) == [version, "latest"]


def test_release_sh_via_the_fixture_helper_fails_loudly(key: Path, tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"release\.sh 1\.0 failed"):
        release_sh("1.0", tmp_path / "out", key)
