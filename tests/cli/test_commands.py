"""The admin commands, through click's CliRunner on a real data directory."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from appliance.cli import main


def invoke(data: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--data-dir", str(data), *args])
    return result.exit_code, result.stdout, result.stderr


def test_user_lifecycle(tmp_path: Path) -> None:
    assert invoke(tmp_path, "user", "add", "alice")[0] == 0
    code, out, err = invoke(tmp_path, "user", "add", "alice")
    assert code == 1
    assert "already exists" in err
    code, out, err = invoke(tmp_path, "user", "token", "alice", "--expires", "2h")
    assert code == 0
    assert out.startswith("tdg_")
    assert len(out.strip()) >= 4 + 27
    assert "expires" in err
    assert invoke(tmp_path, "user", "list")[1].split() == ["alice"]
    assert "revoked 1" in invoke(tmp_path, "user", "revoke", "alice")[1]
    code, _, err = invoke(tmp_path, "user", "token", "alice", "--expires", "soon")
    assert code == 2
    assert "bad duration" in err
    code, _, err = invoke(tmp_path, "user", "del", "bob")
    assert code == 4
    assert "no user 'bob'" in err
    code, _, err = invoke(tmp_path, "user", "add", "x" * 65)
    assert code == 2
    assert "1-64 bytes" in err
    assert invoke(tmp_path, "user", "del", "alice")[0] == 0


def test_group_lifecycle(tmp_path: Path) -> None:
    for name in ("alice", "bob", "carol"):
        invoke(tmp_path, "user", "add", name)
    code, out, _ = invoke(tmp_path, "group", "add", "team", "--member", "alice",
                          "--member", "bob")
    assert code == 0
    assert out.startswith("group 1 'team': 2 member(s)")
    code, out, _ = invoke(tmp_path, "group", "members", "1", "--add", "carol", "--perms",
                          "receive", "--remove", "bob")
    assert "carol [receive]" in out
    assert "bob" not in out
    code, _, err = invoke(tmp_path, "group", "members", "1", "--add", "alice", "--perms", "fly")
    assert code == 2
    assert "unknown permission" in err
    assert "team" in invoke(tmp_path, "group", "list")[1]
    assert invoke(tmp_path, "group", "del", "1")[0] == 0
    code, _, err = invoke(tmp_path, "group", "show", "1")
    assert code == 4
    assert "no group 1" in err


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text("[limits]\nmax_device = 3\n")
    result = CliRunner().invoke(main, ["--config", str(cfg), "user", "list"])
    assert result.exit_code == 3
    assert "limits.max_device: unknown key" in result.stderr


def test_presence_privacy_and_blocks(tmp_path: Path) -> None:
    for name in ("alice", "bob"):
        invoke(tmp_path, "user", "add", name)
    assert invoke(tmp_path, "user", "privacy", "alice")[1] == "everyone\n"
    assert invoke(tmp_path, "user", "privacy", "alice", "contacts")[1] == "contacts\n"
    assert invoke(tmp_path, "user", "privacy", "alice")[1] == "contacts\n"
    code, _, err = invoke(tmp_path, "user", "privacy", "alice", "friends")
    assert code == 2
    assert "'friends' is not one of" in err
    assert invoke(tmp_path, "user", "block", "alice", "bob")[1] == "alice blocks bob\n"
    assert invoke(tmp_path, "user", "block", "alice", "bob")[1] == "alice blocks bob (already)\n"
    assert invoke(tmp_path, "user", "blocks", "alice")[1] == "bob\n"
    assert invoke(tmp_path, "user", "blocks", "bob")[1] == ""
    code, _, err = invoke(tmp_path, "user", "block", "alice", "alice")
    assert code == 2
    assert "cannot block itself" in err
    code, _, err = invoke(tmp_path, "user", "block", "alice", "nobody")
    assert code == 4
    assert "nobody" in err
    code, _, err = invoke(tmp_path, "user", "privacy", "ghost")
    assert code == 4
    assert "no user 'ghost'" in err
    assert invoke(tmp_path, "user", "block", "alice", "bob", "--undo")[1] == "alice unblocks bob\n"
    assert invoke(tmp_path, "user", "blocks", "alice")[1] == ""
