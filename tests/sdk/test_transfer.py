"""The pieces of a transfer: what the server answers, read with suspicion; names from
other users made safe; progress; the upload digest across resumes (pure, or a temp file)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from appliance.sdk import (
    FileAccessDeniedError,
    FileRejectedError,
    FileTransferError,
    NoSuchFileError,
    QuotaExceededError,
    UnauthorizedError,
)
from appliance.sdk.http import Response
from appliance.sdk.transfer import (
    MAX_NAME_BYTES,
    Meter,
    UploadDigest,
    content_range,
    header_integer,
    http_error,
    local_name,
    tus_metadata,
    upload_name,
)


def test_content_range() -> None:
    assert content_range("bytes 100-199/1000") == (100, 1000)
    assert content_range("bytes 0-0/1") == (0, 1)
    for bad in (None, "", "bytes 5-4/10", "items 0-1/2", "bytes 0-10/10", "bytes -1-2/3",
                "bytes 0-1/" + "9" * 30, "bytes */10", "bytes 0-1/+3", "bytes ٣-4/5"):
        with pytest.raises(FileTransferError):
            content_range(bad)


def test_header_integer() -> None:
    assert header_integer("0", "x") == 0
    assert header_integer("9" * 19, "x") == 10**19 - 1
    for bad in (None, "", "-1", "+5", "1.0", "9" * 20, "٣", "0x10"):
        with pytest.raises(FileTransferError):
            header_integer(bad, "Upload-Offset")


def _problem(status: int, body: bytes) -> FileTransferError:
    return http_error(Response(status, {}), body)


def test_problems_become_typed_errors() -> None:
    quota = _problem(413, b'{"title": "content too large", "detail": "files are limited",'
                          b' "limit": "media.max_file_bytes", "allowed": 1048576}')
    assert isinstance(quota, QuotaExceededError)
    assert (quota.http_status, quota.title, quota.detail, quota.limit, quota.allowed) == (
        413, "content too large", "files are limited", "media.max_file_bytes", 1048576)
    assert str(quota) == "HTTP 413 content too large: files are limited"
    assert isinstance(_problem(401, b""), UnauthorizedError)
    assert isinstance(_problem(403, b"{}"), FileAccessDeniedError)
    assert isinstance(_problem(404, b"not json"), NoSuchFileError)
    assert isinstance(_problem(422, b'{"title": 5}'), FileRejectedError)
    server = _problem(500, b"[]")
    assert type(server) is FileTransferError
    assert (server.title, server.detail) == ("", "")


def test_a_hostile_problem_document_is_bounded() -> None:
    error = _problem(413, b'{"title": "%s", "detail": "%s", "limit": ["x"], "allowed": true}'
                     % (b"t" * 100_000, b"d" * 100_000))
    assert isinstance(error, QuotaExceededError)
    assert (len(error.title), len(error.detail), error.limit, error.allowed) == (200, 1000, "", 0)
    assert len(str(error)) < 500


@pytest.mark.parametrize(("name", "safe"), [
    ("../../etc/passwd", "passwd"), ("C:\\Users\\x\\evil.exe", "evil.exe"), ("..", "file"),
    (".", "file"), ("", "file"), (".bashrc", "bashrc"), ("a\x00b\nc", "abc"),
    ("doc\u202efdp.exe", "docfdp.exe"),  # no right-to-left override to disguise a name
    ("photo.jpg", "photo.jpg"), ("report é.pdf", "report é.pdf"),
])
def test_names_from_other_users_are_made_safe(name: str, safe: str) -> None:
    assert local_name(name) == safe


def test_names_are_cut_on_a_character_boundary() -> None:
    name = "é" * 200  # 400 bytes
    for cut in (local_name(name), upload_name(name)):
        assert len(cut.encode()) <= MAX_NAME_BYTES
        assert cut == "é" * 127
    assert tus_metadata("a b", "text/plain") == b"filename YSBi,filetype dGV4dC9wbGFpbg=="


def test_progress_is_throttled_monotonic_and_ends_at_the_total() -> None:
    calls: list[tuple[int, int]] = []

    async def run() -> None:
        meter = Meter(lambda done, total: calls.append((done, total)), 1000)
        for done in range(0, 1001, 10):
            await meter.update(done)
        await meter.update(500)  # a resume went back: not reported
        await meter.update(1000, final=True)

    asyncio.run(run())
    assert calls[0] == (10, 1000)
    assert calls[-1] == (1000, 1000)
    assert len(calls) <= 3  # one at once, then nothing for 0.1 s, then the end


def test_the_upload_digest_survives_rewinds(tmp_path: Path) -> None:
    data = os.urandom(1_000_000)
    path = tmp_path / "f"
    path.write_bytes(data)

    async def run() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            digest = UploadDigest(fd)
            digest.feed(data[:300_000])
            digest.confirm()  # the server has 300 000
            digest.feed(data[300_000:700_000])  # cut while sending
            await digest.rewind(450_000)  # HEAD: the server kept 450 000
            assert digest.position == 450_000
            digest.feed(data[450_000:])
            assert digest.hash.digest() == hashlib.sha256(data).digest()
            await digest.rewind(100_000)  # before the mark: the server lost bytes
            digest.feed(data[100_000:])
            assert digest.hash.digest() == hashlib.sha256(data).digest()
        finally:
            os.close(fd)

    asyncio.run(run())
