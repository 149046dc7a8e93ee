"""The status file: written atomically and privately, read as hostile input."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from appliance.errors import StatusFileError
from appliance.status.report import (
    MAX_BYTES,
    Certificate,
    Listener,
    ServerState,
    StatusReport,
    parse,
    read_report,
    status_path,
    to_json,
    write_report,
)

NOW = 1_800_000_000_000


def sample(**changes: object) -> StatusReport:
    report = StatusReport(
        pid=os.getpid(), pid_start=123, version="0.1.0", state=ServerState.RUNNING,
        started_ms=NOW - 60_000, updated_ms=NOW, uptime_s=60.0, interval_s=5.0,
        data_dir="/var/lib/tidings",
        listeners=(Listener("main", "0.0.0.0", 443), Listener("redirect", "0.0.0.0", 80, True)),
        connections=3, by_protocol={"native": 2, "http2": 1}, commit_queue=7,
        store_backend="sqlite", store_location="SQLite /var/lib/tidings/tidings.sqlite3",
        certificate=Certificate("acme", NOW + 30 * 86_400_000, "failing", 2, "DNS problem",
                                NOW + 3_600_000))
    return dataclasses.replace(report, **changes)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field() -> None:
    report = sample()
    assert parse(to_json(report)) == report
    doc = json.loads(to_json(report))
    # People and scripts read times as RFC 3339 as well as epoch ms.
    assert doc["updated_at"] == "2027-01-15T08:00:00+00:00"
    assert doc["certificate"]["days_left"] == 30.0
    assert doc["certificate"]["not_after"].startswith("2027-02-14")
    assert doc["listeners"][1] == {"role": "redirect", "host": "0.0.0.0", "port": 80,
                                   "activated": True}


@pytest.mark.slow
def test_write_is_atomic_and_private(tmp_path: Path) -> None:
    old = os.umask(0o077)  # the CLI's umask: the file must still be group-readable
    try:
        path = write_report(tmp_path, sample())
    finally:
        os.umask(old)
    assert path == status_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
    assert read_report(tmp_path) == sample()
    # Readers racing a writer see the old report or the new one, never a mix.
    stop = threading.Event()
    seen: set[int] = set()
    errors: list[Exception] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                got = read_report(tmp_path)
                assert got is not None
                seen.add(got.commit_queue)
            except Exception as exc:  # noqa: BLE001 - collected for the assertion below
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    for n in range(300):
        write_report(tmp_path, sample(commit_queue=n))
    stop.set()
    thread.join()
    assert not errors
    assert seen <= set(range(300)) | {7}
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]  # no temporary left


def test_missing_file_is_none(tmp_path: Path) -> None:
    assert read_report(tmp_path) is None


@pytest.mark.parametrize(("mutate", "named"), [
    (lambda d: d.update(pid="1"), "pid"),
    (lambda d: d.update(pid=0), "pid"),
    (lambda d: d.update(pid=True), "pid"),
    (lambda d: d.update(state="sleeping"), "state"),
    (lambda d: d.update(format=2), "format"),
    (lambda d: d.update(interval_s=0), "interval_s"),
    (lambda d: d.update(updated_ms=2**60), "updated_ms"),
    (lambda d: d["listeners"][0].update(port=70000), "port"),
    (lambda d: d.update(listeners=[d["listeners"][0]] * 9), "listeners"),
    (lambda d: d["connections"].update(open=-1), "open"),
    (lambda d: d["connections"].update(by_protocol={str(i): 1 for i in range(17)}),
     "by_protocol"),
    (lambda d: d["queue"].update(store_failing="no"), "store_failing"),
    (lambda d: d["store"].update(location="x" * 600), "location"),
    (lambda d: d.update(certificate=[]), "certificate"),
])
def test_bad_fields_are_refused_by_name(mutate, named: str) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(to_json(sample()))
    mutate(doc)
    with pytest.raises(StatusFileError, match=named):
        parse(json.dumps(doc).encode())


def test_hostile_files_are_refused_without_harm(tmp_path: Path) -> None:
    run = status_path(tmp_path).parent
    run.mkdir()
    path = status_path(tmp_path)
    path.write_bytes(b"{" * 100_000)
    with pytest.raises(StatusFileError, match="larger than"):
        read_report(tmp_path)
    path.write_bytes(b"[" * 5000 + b"]" * 5000)
    with pytest.raises(StatusFileError):
        read_report(tmp_path)
    path.write_bytes(b"\xff\xfe not json")
    with pytest.raises(StatusFileError, match="not JSON"):
        read_report(tmp_path)
    # A link to another file (say /etc/shadow, read as root) is not followed.
    path.unlink()
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0")
    path.symlink_to(secret)
    with pytest.raises(StatusFileError, match="cannot read"):
        read_report(tmp_path)
    # A FIFO would block a reader forever: refused at once.
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(StatusFileError, match="not a regular file"):
        read_report(tmp_path)
    assert MAX_BYTES < 100_000


def test_control_characters_never_reach_the_terminal() -> None:
    doc = json.loads(to_json(sample()))
    doc["version"] = "0.1\x1b[2J"
    doc["connections"]["by_protocol"] = {"\x1b]0;owned\x07": 1}
    report = parse(json.dumps(doc).encode())
    assert report.version == "0.1?[2J"
    assert list(report.by_protocol) == ["?]0;owned?"]


def test_stale_after_three_intervals() -> None:
    report = sample()
    assert not report.stale(NOW + 15_000)
    assert report.stale(NOW + 15_001)
    assert report.main_listener() == Listener("main", "0.0.0.0", 443)
    assert report.certificate is not None
    assert report.certificate.days_left(NOW) == 30.0
    assert Certificate("self-signed").days_left(NOW) is None
