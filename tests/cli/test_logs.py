"""The log never carries a credential, whatever logs it (issue 12, finding 8); text or
JSON lines, with journald priorities when stderr is the journal (issue 14)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli.logs import REDACTED, RedactSecrets, redact
from tests.support.components import REPO


@pytest.mark.parametrize("text", [
    "Decoded (b'authorization', b'Bearer tds_AbC-123_x'), total consumed 37 bytes",
    "Authorization: Bearer opaque.jwt.value",
    "authorization: basic dXNlcjpwYXNz",
    "hello failed for token tdg_Zm9vYmFy-_",
    "operator key tdo_k3y-k3y",
])
def test_credentials_are_masked(text: str) -> None:
    masked = redact(text)
    assert REDACTED in masked
    for secret in ("tds_AbC", "opaque.jwt", "dXNlcjpw", "Zm9vYmFy", "k3y-k3y"):
        assert secret not in masked


def test_the_filter_masks_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.redact")
    log.addFilter(RedactSecrets())
    try:
        with caplog.at_level(logging.DEBUG, "test.redact"):
            log.debug("header %r", (b"authorization", b"Bearer tds_secret1"))
            try:
                raise ValueError("bad token tdg_secret2")
            except ValueError:
                log.exception("failed")
    finally:
        log.filters.clear()
    assert "secret1" not in caplog.text
    assert "secret2" not in caplog.text
    assert caplog.text.count(REDACTED) >= 2


# --- formats and the journal (issue 14): a real process writing to a real stderr ----------

_SECRETS = {"app": "tds_Ap9SecretValue-1", "operator": "tdo_0peratorKey_2", "token": "tdg_T0ken-3",
            "bearer": "opaque.bearer.value4"}
#: A child that logs the secrets in arguments and in an exception, at every level.
_CHILD = f"""
import logging, sys
from appliance.cli.logs import configure
configure(debug=True, log_format=sys.argv[1])
log = logging.getLogger("tidings.test")
s = {_SECRETS!r}
log.debug("debug %s", s["token"])
log.info("login with %s and %s", s["app"], s["operator"])
log.warning("header %r", (b"authorization", ("Bearer " + s["bearer"]).encode()))
try:
    raise RuntimeError("refused " + s["token"] + " Bearer " + s["bearer"] + " " + s["app"])
except RuntimeError:
    log.exception("failed for %s", s["operator"])
"""


def _run_child(log_format: str, *, stderr: int | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _CHILD, log_format], text=True, timeout=60,
                          stdout=subprocess.PIPE, stderr=stderr or subprocess.PIPE,
                          env={**os.environ, **(env or {})}, cwd=REPO, check=True)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_in_any_field_in_either_format(log_format: str) -> None:
    out = _run_child(log_format).stderr
    for secret in _SECRETS.values():
        assert secret not in out, (secret, out)
        assert secret[4:] not in out  # not even without its prefix
    assert out.count(REDACTED) >= 8, out
    assert "RuntimeError" in out  # the traceback itself is there, masked


def test_json_lines_carry_ts_level_logger_msg_and_exc() -> None:
    lines = _run_child("json").stderr.splitlines()
    records = [json.loads(line) for line in lines]  # one object per line, tracebacks included
    assert records[0]["logger"] == "appliance.cli.logs"  # "debug logging on"
    records = records[1:]
    assert [r["level"] for r in records] == ["debug", "info", "warning", "error"]
    for record in records:
        assert record["logger"] == "tidings.test"
        stamp = dt.datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
        assert record["ts"].endswith("Z")
        assert stamp.utcoffset() == dt.timedelta(0)
        assert abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 60
    assert records[1]["msg"] == "login with tds_[redacted] and tdo_[redacted]"
    assert "exc" not in records[1]
    assert records[3]["exc"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: refused tdg_[redacted] Bearer [redacted]" in records[3]["exc"]


def _journal_socket() -> tuple[socket.socket, socket.socket, str]:
    """A stream socket pair; JOURNAL_STREAM naming the child's end, as systemd sets it."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stat = os.fstat(theirs.fileno())
    return ours, theirs, f"{stat.st_dev}:{stat.st_ino}"


def _journal_lines(log_format: str) -> list[str]:
    ours, theirs, stream = _journal_socket()
    with ours, theirs:
        _run_child(log_format, stderr=theirs.fileno(), env={"JOURNAL_STREAM": stream})
        theirs.close()
        data = b""
        while chunk := ours.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    assert "appliance.cli.logs" in lines[0]  # "debug logging on", then the child's own
    return lines[1:]


def test_on_the_journal_text_lines_carry_their_priority_and_no_time() -> None:
    lines = _journal_lines("text")
    assert lines[:4] == ["<7>DEBUG tidings.test: debug tdg_[redacted]",
                         "<6>INFO tidings.test: login with tds_[redacted] and tdo_[redacted]",
                         "<4>WARNING tidings.test: header (b'authorization',"
                         " b'Bearer [redacted]')",
                         "<3>ERROR tidings.test: failed for tdo_[redacted]"]
    # Each traceback line is an entry of its own: all at the error's priority.
    assert lines[4] == "<3>Traceback (most recent call last):"
    assert all(line.startswith("<3>") for line in lines[4:]), lines


def test_on_the_journal_json_lines_carry_their_priority() -> None:
    lines = _journal_lines("json")
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>"]
    assert json.loads(lines[3][3:])["level"] == "error"


def test_journal_stream_of_another_file_changes_nothing() -> None:
    """Inherited from a unit but stderr redirected elsewhere: plain lines with their time."""
    ours, theirs, stream = _journal_socket()
    ours.close()
    theirs.close()  # stderr is a pipe: another device and inode
    out = _run_child("text", env={"JOURNAL_STREAM": stream}).stderr.splitlines()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} DEBUG tidings.test: ", out[1]), out
    assert not any(line.startswith("<") for line in out)
    bogus = _run_child("text", env={"JOURNAL_STREAM": "9" * 80 + ":1"}).stderr
    assert not bogus.startswith("<")


def test_the_command_takes_the_format_as_an_option_or_from_the_environment(
        tmp_path: Path) -> None:
    for args, env in ((["--log-format", "json"], {}), ([], {"TIDINGS_LOG_FORMAT": "json"})):
        done = subprocess.run(
            [sys.executable, "-m", "appliance", *args, "--debug", "--data-dir", str(tmp_path),
             "operator", "key"], capture_output=True, text=True, timeout=60, cwd=REPO,
            env={**os.environ, **env}, check=True)
        key = done.stdout.strip()
        assert key.startswith("tdo_")
        records = [json.loads(line) for line in done.stderr.splitlines()]
        assert records, done.stderr
        assert records[0]["level"] == "debug"
        assert key not in done.stderr
    refused = subprocess.run([sys.executable, "-m", "appliance", "--log-format", "xml",
                              "operator", "key"], capture_output=True, text=True, timeout=60,
                             cwd=REPO)
    assert refused.returncode == 2
    assert "--log-format" in refused.stderr
