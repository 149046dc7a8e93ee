"""The permissions check on real files and modes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.certs.selfsigned import ensure_self_signed
from appliance.config import load_config
from appliance.config.database import SQLITE_FILE
from appliance.doctor import permissions
from appliance.doctor.model import Subject, Verdict
from appliance.doctor.permissions import check_permissions
from appliance.engine.clock import SystemClock


def subject(data_dir: Path, config_file: Path | None = None, *, installed: bool = False,
            **settings: object) -> Subject:
    config = load_config(None, {"storage.data_dir": data_dir, **settings})
    return Subject(config, SystemClock().wall_ms(), installed=installed,
                   config_file=config_file)


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    """A data directory as the server leaves it: 0700, keys and database 0600."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    ensure_self_signed(data / "tls")
    (data / SQLITE_FILE).write_bytes(b"")
    (data / SQLITE_FILE).chmod(0o600)
    return data


def test_a_private_data_directory_is_ok(private_dir: Path) -> None:
    found = check_permissions(subject(private_dir))
    assert found.verdict is Verdict.OK, found
    assert found.summary == (f"{private_dir} is 0700, owned by {found.figures['owner']};"
                             " keys and database private")


def test_a_world_writable_data_directory_fails(private_dir: Path) -> None:
    private_dir.chmod(0o777)
    found = check_permissions(subject(private_dir))
    assert found.verdict is Verdict.FAIL
    assert found.summary == f"{private_dir} is 0777: others may write"
    assert found.fix == f"chmod 0750 {private_dir}"
    private_dir.chmod(0o755)
    found = check_permissions(subject(private_dir))
    assert found.verdict is Verdict.WARN
    assert found.summary == f"{private_dir} is 0755: other users may look in"


def test_readable_keys_and_database_fail(private_dir: Path) -> None:
    key = private_dir / "tls" / "self-signed.key"
    key.chmod(0o640)
    (private_dir / SQLITE_FILE).chmod(0o644)
    loose = private_dir / "edge" / "blocklist.txt"
    loose.parent.mkdir()
    loose.write_text("")
    loose.chmod(0o666)
    (private_dir / "shadow").symlink_to("/etc/shadow")  # a link is never followed
    found = check_permissions(subject(private_dir))
    assert found.verdict is Verdict.FAIL
    problems = found.figures["problems"]
    assert f"key {key} is 0640: others may read it" in problems
    assert (f"database {private_dir / SQLITE_FILE} is 0644: every user may read it"
            in problems)
    assert f"{loose} is 0666: others may write" in problems
    assert len(problems) == 3
    assert f"chmod 0600 {key}" in found.fix


def test_the_private_mariadb_directory_keeps_its_own_modes(private_dir: Path) -> None:
    mariadb = private_dir / "mariadb"
    mariadb.mkdir(mode=0o755)
    (mariadb / "ibdata1").write_bytes(b"")
    (mariadb / "ibdata1").chmod(0o666)
    assert check_permissions(subject(private_dir)).verdict is Verdict.OK


def test_installed_data_directory_belongs_to_the_service_user(
        private_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "nobody" stands for the service user: this host has no `tidings` user.
    monkeypatch.setattr(permissions.layout, "SERVICE_USER", "nobody")
    found = check_permissions(subject(private_dir, installed=True))
    assert found.verdict is Verdict.FAIL
    assert found.summary == (f"{private_dir} is owned by {found.figures['owner']}, not nobody:"
                             " the service cannot write it")
    assert found.fix == f"chown -R nobody:nobody {private_dir}"
    if os.geteuid() == 0:
        os.chown(private_dir, 65534, 65534)
        assert check_permissions(subject(private_dir, installed=True)).verdict is Verdict.OK


def test_a_world_readable_configuration_file(private_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text("")
    config.chmod(0o644)
    found = check_permissions(subject(private_dir, config))
    assert found.verdict is Verdict.WARN
    assert found.summary == f"{config} is 0644: every user may read it"
    url = "mariadb://tidings:s3cret@db.example:3306/tidings"
    found = check_permissions(subject(private_dir, config, **{"storage.database": url}))
    assert found.verdict is Verdict.FAIL
    assert "holds the database password" in found.summary
    assert "s3cret" not in str(found.to_dict())
    config.chmod(0o640)
    assert check_permissions(subject(private_dir, config)).verdict is Verdict.OK


@pytest.mark.slow
def test_the_walk_is_bounded(private_dir: Path) -> None:
    many = private_dir / "many"
    many.mkdir()
    for n in range(20_001):
        (many / str(n)).touch()
    found = check_permissions(subject(private_dir))
    assert found.verdict is Verdict.WARN
    assert "more than 20000 entries: the rest was not checked" in found.summary


def test_a_data_directory_not_made_yet(tmp_path: Path) -> None:
    found = check_permissions(subject(tmp_path / "absent"))
    assert (found.verdict, found.summary) == (Verdict.OK, f"{tmp_path / 'absent'}: not created yet")
