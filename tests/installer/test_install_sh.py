"""installer/install.sh on its own: clean POSIX sh, the layout of appliance/system/layout.py,
and the refusals that come before anything is downloaded (run on this host).

Every run here uses the template from the source tree, which refuses to install
anything (E15, no release key) even if every check before it passed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.release.publish import INSTALLER_KEY_PLACEHOLDER, INSTALLER_VERSION_PLACEHOLDER
from appliance.system import layout
from tests.support.components import REPO, missing

INSTALL_SH = REPO / "installer" / "install.sh"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} not found (apt-get install {name})")
    return path


def installer(*args: str, script: Path = INSTALL_SH, **env: str,
              ) -> subprocess.CompletedProcess[str]:
    """Run the installer with only `env` (and PATH) set."""
    return subprocess.run(["sh", str(script), *args],
                          env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_install_sh_is_clean_posix_sh() -> None:
    done = subprocess.run([tool("shellcheck"), "-s", "sh", str(INSTALL_SH)],
                          capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, "")
    done = subprocess.run([tool("dash"), "-n", str(INSTALL_SH)], capture_output=True,
                          text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")


def test_install_sh_runs_only_from_main_on_its_last_line() -> None:
    text = INSTALL_SH.read_text()
    assert text.rstrip("\n").splitlines()[-1] == 'main "$@"'
    assert "\nset -eu\n" in text
    # Only assignments, functions and comments at the top level: a truncated
    # download runs nothing.
    for cut in range(0, len(text) - len('main "$@"\n'), 997):
        done = subprocess.run(["sh", "-s", "--", "--dry-run"], input=text[:cut],
                              capture_output=True, text=True, timeout=30, check=False)
        assert "[tidings]" not in done.stdout + done.stderr, f"cut at {cut}"


def test_placeholders_appear_once_for_release_sh() -> None:
    text = INSTALL_SH.read_text()
    assert text.count(INSTALLER_KEY_PLACEHOLDER) == 1
    assert text.count(INSTALLER_VERSION_PLACEHOLDER) == 1


def shell_values(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+)=([^\s'\"]+)$", text, flags=re.MULTILINE))


def test_layout_agrees_with_appliance_system_layout() -> None:
    values = shell_values(INSTALL_SH.read_text())
    assert Path(values["DEFAULT_INSTALL_DIR"]) / values["BIN_NAME"] == layout.BIN
    assert values["PREVIOUS_SUFFIX"] == layout.PREVIOUS_SUFFIX
    assert Path(values["CONFIG_DIR"]) == layout.CONFIG_DIR
    assert Path(values["CONFIG_FILE"]) == layout.CONFIG_FILE
    assert Path(values["DATA_DIR"]) == layout.DATA_DIR
    assert values["SERVICE_USER"] == layout.SERVICE_USER
    assert Path(values["UNIT_DIR"]) == layout.UNIT_DIR
    assert values["SERVICE_UNIT"] == layout.SERVICE_UNIT
    # The units run the executable where the installer puts it (it rewrites
    # exactly this path for TIDINGS_INSTALL_DIR).
    for unit in (REPO / "systemd").glob("*.service"):
        [start] = [line for line in unit.read_text().splitlines()
                   if line.startswith("ExecStart=")]
        assert start.removeprefix("ExecStart=").split()[0] == str(layout.BIN), unit.name


def os_release(tmp_path: Path, **fields: str) -> str:
    path = tmp_path / "os-release"
    path.write_text("".join(f'{key}="{value}"\n' for key, value in fields.items()))
    return str(path)


@pytest.mark.parametrize("machine", ["riscv64", "armv7l", "i686", "s390x"])
def test_unsupported_architecture_is_refused(machine: str) -> None:
    done = installer(TIDINGS_TEST_UNAME_M=machine)
    assert done.returncode == 1
    assert done.stderr == (f"[tidings] error E02: unsupported architecture {machine}: tidings"
                           " runs on amd64 (x86_64) and arm64 (aarch64)\n")


@pytest.mark.parametrize(("fields", "name"), [
    ({"ID": "debian", "VERSION_ID": "11", "PRETTY_NAME": "Debian GNU/Linux 11 (bullseye)"},
     "Debian GNU/Linux 11 (bullseye)"),
    ({"ID": "ubuntu", "VERSION_ID": "22.04", "PRETTY_NAME": "Ubuntu 22.04.4 LTS"},
     "Ubuntu 22.04.4 LTS"),
    ({"ID": "debian", "PRETTY_NAME": "Debian GNU/Linux trixie/sid"},
     "Debian GNU/Linux trixie/sid"),
    ({"ID": "fedora", "VERSION_ID": "40", "PRETTY_NAME": "Fedora Linux 40"}, "Fedora Linux 40"),
    ({"ID": "ubuntu", "VERSION_ID": "24.04; rm -rf /"}, "ubuntu 24.04; rm -rf /"),
])
def test_unsupported_os_is_refused(tmp_path: Path, fields: dict[str, str], name: str) -> None:
    done = installer(TIDINGS_TEST_UNAME_M="aarch64",
                     TIDINGS_TEST_OS_RELEASE=os_release(tmp_path, **fields))
    assert done.returncode == 1
    assert done.stderr == (
        f"[tidings] error E03: unsupported operating system: {name}; supported: Debian 12"
        " or newer, Ubuntu 24.04 or newer; amd64 or arm64; systemd\n")


@pytest.mark.parametrize("fields", [
    {"ID": "debian", "VERSION_ID": "12"}, {"ID": "debian", "VERSION_ID": "13"},
    {"ID": "ubuntu", "VERSION_ID": "24.04"}, {"ID": "ubuntu", "VERSION_ID": "26.10"},
])
def test_supported_os_passes_to_the_glibc_check(tmp_path: Path, fields: dict[str, str]) -> None:
    done = installer(TIDINGS_TEST_OS_RELEASE=os_release(tmp_path, **fields),
                     TIDINGS_TEST_GLIBC="glibc 2.35")
    assert done.returncode == 1
    assert done.stderr.startswith("[tidings] error E04: glibc 2.35 is too old: tidings needs"
                                  " 2.36 or newer")


@pytest.mark.parametrize(("glibc", "verdict"), [
    ("glibc 2.36", None), ("glibc 2.40", None), ("glibc 3.0", None),
    ("glibc 2.9", "E04: glibc 2.9 is too old"), ("glibc 1.99", "E04: glibc 1.99 is too old"),
    ("musl", "E04: cannot tell this system's glibc version"),
    ("glibc ", "E04: cannot tell this system's glibc version"),
])
def test_glibc_floor(tmp_path: Path, glibc: str, verdict: str | None) -> None:
    done = installer(TIDINGS_TEST_GLIBC=glibc, TIDINGS_TEST_OS_RELEASE=os_release(
        tmp_path, ID="debian", VERSION_ID="12"))
    assert done.returncode == 1
    if verdict is None:  # passed; a later check (systemd, or the template's E15) stops it
        assert "E04" not in done.stderr
        assert re.search(r"error E(05|15):", done.stderr), done.stderr
    else:
        assert f"[tidings] error {verdict}" in done.stderr


@pytest.mark.parametrize(("env", "message"), [
    ({"TIDINGS_BASE_URL": "http://releases.tidings.dev"},
     "E08: TIDINGS_BASE_URL must be an https:// URL (http:// only for 127.0.0.1 or"
     " localhost): http://releases.tidings.dev"),
    ({"TIDINGS_BASE_URL": "http://127.0.0.1.evil.example"}, "E08: TIDINGS_BASE_URL must be"),
    ({"TIDINGS_BASE_URL": "ftp://127.0.0.1/"}, "E08: TIDINGS_BASE_URL must be"),
    ({"TIDINGS_BASE_URL": "https://x.example/$(reboot)"}, "E08: TIDINGS_BASE_URL holds"),
    ({"TIDINGS_VERSION": "1.2"}, "E09: TIDINGS_VERSION must be MAJOR.MINOR.PATCH or latest"),
    ({"TIDINGS_VERSION": "../1.0.0"}, "E09: TIDINGS_VERSION must be"),
    ({"TIDINGS_VERSION": "01.0.0"}, "E09: TIDINGS_VERSION must be"),
    ({"TIDINGS_INSTALL_DIR": "bin"}, "E10: TIDINGS_INSTALL_DIR must be an absolute path"),
    ({"TIDINGS_INSTALL_DIR": "/opt/my bin"}, "E10: TIDINGS_INSTALL_DIR: letters, digits"),
    ({"TIDINGS_INSTALL_DIR": "/opt/#x"}, "E10: TIDINGS_INSTALL_DIR: letters, digits"),
])
def test_bad_settings_are_refused_first(env: dict[str, str], message: str) -> None:
    done = installer(**env)
    assert done.returncode == 1
    assert done.stderr.startswith(f"[tidings] error {message}")


def test_unknown_argument_is_refused() -> None:
    done = installer("--yes")
    assert done.returncode == 1
    assert done.stderr.startswith("[tidings] error E01: unknown argument: --yes\nusage:")
