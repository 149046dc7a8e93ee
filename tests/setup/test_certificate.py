"""Certificate facts: which names a certificate covers, who may read a key file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from appliance.setup.certificate import absolute, covers, readable_by

NOBODY = 65534


@pytest.mark.parametrize(("names", "hostname", "expected"), [
    (("chat.example.com",), "chat.example.com", True),
    (("*.example.com",), "chat.example.com", True),
    (("*.example.com",), "a.chat.example.com", False),  # one label only (RFC 6125 §6.4.3)
    (("*.example.com",), "example.com", False),
    (("other.example.com",), "chat.example.com", False),
    ((), "chat.example.com", False),
])
def test_a_certificate_covers_its_names_and_one_wildcard_label(
        names: tuple[str, ...], hostname: str, expected: bool) -> None:
    assert covers(names, hostname) is expected


def test_readability_follows_the_mode_bits_of_the_file_and_every_directory() -> None:
    # Under /tmp itself: every ancestor must be searchable for the check to pass at all.
    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        directory = Path(top)
        directory.chmod(0o755)
        key = directory / "site.key"
        key.write_text("k")
        group = {key.stat().st_gid}  # a user who is not the owner, but in the file's group
        key.chmod(0o600)
        assert not readable_by(str(key), NOBODY, group)
        key.chmod(0o640)
        assert readable_by(str(key), NOBODY, group)
        assert not readable_by(str(key), NOBODY, {NOBODY})  # neither owner nor group
        directory.chmod(0o700)  # the file is readable, its directory not searchable
        assert not readable_by(str(key), NOBODY, group)
        assert readable_by(str(key), 0, {0})


def test_file_answers_become_absolute_without_resolving_links(tmp_path: Path) -> None:
    link = tmp_path / "live.pem"
    link.symlink_to(tmp_path / "archive1.pem")
    assert absolute(str(link)) == str(link)
    assert absolute("relative.pem") == os.path.join(os.getcwd(), "relative.pem")
