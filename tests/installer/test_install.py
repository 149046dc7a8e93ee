"""installer/install.sh for real: `curl ... | sh` in a booted Debian 12 container.

The releases are this checkout's, signed with the session's test key and served
from the host's 127.0.0.1 (tests/support/releases.py); the container shares the
host's network, so its curl reaches them.  Each test boots a fresh container
(``--volatile=overlay``: nothing survives it).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from appliance.system import layout
from tests.support.container import Container, booted
from tests.support.releases import EXE, Releases

pytestmark = pytest.mark.slow

#: Every path the installer may touch, listed with owner, mode, size and mtime.
WATCHED = ("/usr/local/bin", "/opt/tidings", str(layout.CONFIG_DIR), str(layout.DATA_DIR),
           str(layout.UNIT_DIR))
DROP_IN = "/etc/systemd/system/tidings.service.d/test.conf"


def snapshot(box: Container) -> str:
    """What the installer could change: files under WATCHED, the user and group databases."""
    listing = box.run(
        f"find {' '.join(WATCHED)} -printf '%p %m %u %g %s %T@\\n' 2>/dev/null | sort;"
        " sha256sum /etc/passwd /etc/group /etc/shadow", check=False).stdout
    assert "/etc/passwd" in listing
    return listing


def stat(box: Container, path: str) -> str:
    return box.run(["stat", "-c", "%a %U %G %F", path]).stdout.strip()


def install(box: Container, releases: Releases, *args: str, **env: str) -> str:
    """`curl <base>/latest/install.sh | ENV sh -s -- ARGS`; stdout and stderr together."""
    done = box.run(f"{releases.install_command(*args, env=env)} 2>&1", check=False,
                   timeout=300)
    assert done.returncode == 0, done.stdout
    return done.stdout


def test_fresh_install_then_idempotent_second_run(releases: Releases) -> None:
    n1 = releases.versions.n1
    with booted("inst") as box:
        started = time.monotonic()
        out = install(box, releases)
        elapsed = time.monotonic() - started
        print(f"fresh install (curl | sh, from start to exit): {elapsed:.2f} s")
        assert f"tidings {n1} installed: /usr/local/bin/tidings" in out
        assert out.rstrip().endswith("[tidings] next step: sudo tidings setup"), out
        assert "systemctl start" not in out
        assert "restart" not in out

        assert stat(box, "/usr/local/bin/tidings") == "755 root root regular file"
        assert stat(box, "/etc/tidings") == "750 root tidings directory"
        assert stat(box, "/var/lib/tidings") == "750 tidings tidings directory"
        assert box.run(["ls", "-A", "/etc/tidings", "/var/lib/tidings"]).stdout.split() == \
            ["/etc/tidings:", "/var/lib/tidings:"]
        user = box.run(["getent", "passwd", "tidings"]).stdout.strip().split(":")
        assert user[5:] == ["/var/lib/tidings", "/usr/sbin/nologin"]
        assert int(user[2]) < 1000, "not a system user"
        group = box.run(["getent", "group", "tidings"]).stdout.strip().split(":")
        assert group[2] == user[3]
        units = sorted(path.name for path in (releases.serve_dir / n1).iterdir()
                       if path.suffix in (".service", ".socket"))
        for unit in units:
            assert stat(box, f"/etc/systemd/system/{unit}") == "644 root root regular file"
            assert box.path(f"/etc/systemd/system/{unit}").read_bytes() == \
                (releases.serve_dir / n1 / unit).read_bytes()
        verified = box.run(["systemd-analyze", "verify", *units], check=False)
        assert (verified.returncode, verified.stderr) == (0, "")
        for unit in units:  # installed, not enabled, not started: no configuration yet
            assert box.run(["systemctl", "is-enabled", unit], check=False).stdout.strip() == \
                "disabled"
            assert box.run(["systemctl", "is-active", unit], check=False).stdout.strip() == \
                "inactive"
        assert box.run("tidings --version").stdout.strip() == f"tidings, version {n1}"
        assert box.path("/tmp").exists()
        assert not list(box.path("/tmp").glob("tidings-install*"))

        before = snapshot(box)
        asked = len(releases.requests)
        again = install(box, releases)
        assert again.rstrip().endswith(f"tidings {n1} is already installed, nothing changed")
        assert "+ " not in again
        assert snapshot(box) == before
        # The installed executable's sum matched: it was not downloaded again.
        assert f"/{n1}/{EXE}" not in releases.requests[asked:]


def steps(out: str, prefix: str) -> list[str]:
    """The system-changing steps of an installer run, temporary names made equal."""
    return [re.sub(r"tidings-install\.\w+", "DL", line.removeprefix(prefix))
            for line in out.splitlines() if line.startswith(prefix)]


def test_dry_run_prints_every_step_and_changes_nothing(releases: Releases) -> None:
    with booted("dry") as box:
        before = snapshot(box)
        out = install(box, releases, "--dry-run")
        assert snapshot(box) == before
        assert box.run(["getent", "passwd", "tidings"], check=False).returncode == 2
        assert out.rstrip().endswith("[tidings] dry run: nothing was changed")
        would = steps(out, "[tidings] [dry-run] would run: ")
        real = steps(install(box, releases), "[tidings] + ")
        assert would == real
        assert would[0] == "groupadd --system tidings"
        assert "systemctl daemon-reload" in would

        before = snapshot(box)
        for args in (("--dry-run",), ("--dry-run", "--uninstall"), ("--dry-run", "--purge")):
            out = install(box, releases, *args)
            assert snapshot(box) == before, args
        assert "already installed, nothing changed" in install(box, releases, "--dry-run")
        purge = steps(install(box, releases, "--dry-run", "--purge"),
                      "[tidings] [dry-run] would run: ")
        assert purge[0].startswith("systemctl disable --now tidings-mariadb.service"
                                   " tidings.service")
        assert "rm -rf /var/lib/tidings" in purge


@pytest.mark.parametrize(("kind", "message"), [
    ("executable-byte", f"[tidings] error E14: checksum mismatch: {EXE}: FAILED - the download"
                        " was tampered with or damaged; nothing was installed"),
    ("foreign-signature", "[tidings] error E12: SHA256SUMS is not signed by the tidings release"
                          " key: the download was tampered with or is not a tidings release;"
                          " nothing was installed"),
    ("sums-line", "[tidings] error E12: SHA256SUMS is not signed by the tidings release key"),
])
def test_tampered_release_is_refused_before_anything_changes(
        releases: Releases, kind: str, message: str) -> None:
    tampered = releases.tampered(kind)
    with booted("tamper") as box:
        before = snapshot(box)
        # The genuine installer, pointed at the tampered copy of the same release.
        done = box.run(f"curl -fsSL {releases.base_url}/{releases.versions.n}/install.sh"
                       f" | TIDINGS_BASE_URL={tampered} sh", check=False, timeout=300)
        assert done.returncode == 1
        assert message in done.stderr, done.stderr
        assert "[tidings] +" not in done.stdout
        assert snapshot(box) == before
        assert not list(box.path("/tmp").glob("tidings-install*"))


def test_a_release_of_another_version_is_refused(releases: Releases) -> None:
    """A signed release served under another version's name (a replay) is refused."""
    replay = releases.serve_dir / "replay"
    if not replay.exists():
        replay.mkdir()
        (replay / releases.versions.n1).symlink_to(releases.serve_dir / releases.versions.n)
    with booted("replay") as box:
        before = snapshot(box)
        done = box.run(f"curl -fsSL {releases.base_url}/{releases.versions.n1}/install.sh"
                       f" | TIDINGS_BASE_URL={releases.base_url}/replay sh", check=False)
        assert done.returncode == 1
        assert (f"E13: asked for {releases.versions.n1}, the signed manifest says"
                f" {releases.versions.n}") in done.stderr
        assert snapshot(box) == before


def test_unreleased_template_is_refused(releases: Releases) -> None:
    template = Path(__file__).resolve().parents[2] / "installer"
    with booted("tmpl", template) as box:
        before = snapshot(box)
        done = box.run(f"TIDINGS_BASE_URL={releases.base_url} sh /opt/payload/install.sh",
                       check=False)
        assert done.returncode == 1
        assert done.stderr.startswith("[tidings] error E15: this is the installer's template")
        assert snapshot(box) == before


def test_uninstall_keeps_data_and_purge_removes_everything(releases: Releases) -> None:
    with booted("uninst") as box:
        install(box, releases)
        box.run("echo '# site settings' > /etc/tidings/tidings.toml;"
                " install -o tidings -g tidings -m 600 /dev/null /var/lib/tidings/store.db")
        out = install(box, releases, "--uninstall")
        assert "kept /etc/tidings, /var/lib/tidings and the tidings user" in out
        for gone in ("/usr/local/bin/tidings", "/etc/systemd/system/tidings.service",
                     "/etc/systemd/system/tidings-mariadb.service"):
            assert not box.path(gone).exists(), gone
        assert box.path("/etc/tidings/tidings.toml").read_text() == "# site settings\n"
        assert stat(box, "/var/lib/tidings/store.db") == "600 tidings tidings regular empty file"
        assert box.run(["getent", "passwd", "tidings"]).returncode == 0
        assert "nothing to remove" in install(box, releases, "--uninstall")

        out = install(box, releases, "--purge")
        assert "removed with its configuration, data and user" in out
        for gone in ("/etc/tidings", "/var/lib/tidings"):
            assert not box.path(gone).exists(), gone
        for database in ("passwd", "group"):
            assert box.run(["getent", database, "tidings"], check=False).returncode == 2
        assert "nothing to remove" in install(box, releases, "--purge")


def test_install_over_a_running_service_restarts_it_only_on_change(
        releases: Releases) -> None:
    n, n1 = releases.versions.n, releases.versions.n1
    with booted("restart") as box:
        install(box, releases, TIDINGS_VERSION=n)
        # Port 0: containers share the host's network.  Type=simple: this test is
        # about the installer, not the server's readiness protocol.
        box.run(f"mkdir -p {Path(DROP_IN).parent}; printf '%s\\n' '[Service]' 'Type=simple'"
                " 'ExecStart=' 'ExecStart=/usr/local/bin/tidings --data-dir /var/lib/tidings"
                f" serve --port 0' > {DROP_IN}; systemctl daemon-reload;"
                " systemctl start tidings.service")
        first = invocation(box)

        assert "nothing changed" in install(box, releases, TIDINGS_VERSION=n)
        assert invocation(box) == first

        assert "not restarting" in install(box, releases, TIDINGS_NO_START="1")
        assert invocation(box) == first
        assert box.run("tidings --version").stdout.strip() == f"tidings, version {n1}"

        out = install(box, releases, TIDINGS_VERSION=n)
        assert "+ systemctl restart tidings.service" in out
        second = invocation(box)
        assert second != first
        assert box.run(["systemctl", "is-active", "tidings.service"]).stdout.strip() == "active"
        # The restarted service runs the version installed: its line in the journal.
        listening = box.run(f"timeout 60 journalctl _SYSTEMD_INVOCATION_ID={second} -f -o cat"
                            f" | grep -m 1 'tidings {n} listening'", check=False)
        assert listening.returncode == 0, box.journal("tidings.service")
        out = install(box, releases, "--uninstall")
        assert box.run(["systemctl", "is-active", "tidings.service"],
                       check=False).stdout.strip() == "inactive"


def invocation(box: Container) -> str:
    value = box.run(["systemctl", "show", "-p", "InvocationID", "--value",
                     "tidings.service"]).stdout.strip()
    assert value
    return value


def test_custom_install_dir_rewrites_the_units(releases: Releases) -> None:
    with booted("dir") as box:
        env = {"TIDINGS_INSTALL_DIR": "/opt/tidings/bin"}
        out = install(box, releases, **env)
        assert out.rstrip().endswith("[tidings] next step: sudo /opt/tidings/bin/tidings setup")
        assert stat(box, "/opt/tidings/bin/tidings") == "755 root root regular file"
        assert not box.path("/usr/local/bin/tidings").exists()
        unit = box.path("/etc/systemd/system/tidings.service").read_text()
        assert ("ExecStart=/opt/tidings/bin/tidings --config /etc/tidings/tidings.toml"
                " --data-dir /var/lib/tidings serve") in unit
        assert "/usr/local/bin" not in unit
        verified = box.run(["systemd-analyze", "verify", "tidings.service"], check=False)
        assert (verified.returncode, verified.stderr) == (0, "")
        before = snapshot(box)
        assert "nothing changed" in install(box, releases, **env)
        assert snapshot(box) == before
        install(box, releases, "--purge", **env)
        assert not box.path("/opt/tidings/bin/tidings").exists()


def test_not_root_dry_run_shows_the_steps_and_a_real_run_needs_root(
        releases: Releases) -> None:
    with booted("user") as box:
        before = snapshot(box)
        as_nobody = f"runuser -u nobody -- sh -c {releases.install_command('--dry-run')!r}"
        done = box.run(f"cd /tmp && {as_nobody}", check=False)
        assert done.returncode == 0, done.stderr
        assert "[tidings] not root: showing what root would do" in done.stdout
        assert "would run: useradd --system" in done.stdout
        # No sudo in this container (nor doas): a clear refusal, nothing changed.
        as_nobody = f"runuser -u nobody -- sh -c {releases.install_command()!r}"
        done = box.run(f"cd /tmp && {as_nobody}", check=False)
        assert done.returncode == 1
        assert "[tidings] error E06: run as root: curl -fsSL <url>/install.sh | sudo sh" in \
            done.stderr
        assert snapshot(box) == before


def test_a_failing_step_stops_the_install_and_names_it(releases: Releases) -> None:
    with booted("fail") as box:
        box.run("mount --bind /usr/local/bin /usr/local/bin &&"
                " mount -o remount,bind,ro /usr/local/bin")
        done = box.run(f"{releases.install_command()} 2>&1", check=False)
        assert done.returncode == 1
        assert re.search(r"\[tidings\] error E17: this step failed: install -m 755 -o root"
                         r" -g root /tmp/tidings-install\.\w+/tidings-linux-amd64"
                         r" /usr/local/bin/\.tidings\.new\n$", done.stdout), done.stdout
        assert not box.path("/etc/systemd/system/tidings.service").exists()
        box.run("umount /usr/local/bin")
        assert "installed: /usr/local/bin/tidings" in install(box, releases)


def test_without_openssl_the_signature_cannot_be_checked_and_nothing_happens(
        releases: Releases) -> None:
    with booted("nossl") as box:
        box.run("mv /usr/bin/openssl /usr/bin/openssl.hidden")
        before = snapshot(box)
        done = box.run(releases.install_command(), check=False)
        assert done.returncode == 1
        assert done.stderr == "[tidings] error E07: openssl is missing: apt-get install -y" \
            " openssl\n"
        assert snapshot(box) == before
