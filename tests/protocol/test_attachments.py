"""The FILE payload convention (PROTOCOL.md §3.3.1): what is read, and every hostile form.

The attacks come first: each must end in `AttachmentError` (the message is
refused with INVALID_FILE), quickly, whatever the input's size.
"""

from __future__ import annotations

import json
import time

import pytest

from appliance.errors import AttachmentError, UsageError
from appliance.protocol.attachments import (
    FILE,
    MAX_FILES_PER_MESSAGE,
    MAX_PAYLOAD_BYTES,
    file_ids,
    is_file_id,
)
from appliance.protocol.wire import Flag, Status

A = "a" * 26
IDS = [f"{c}" * 26 for c in "abcdefghijklmnopqrstuvwxyz234567"]


def payload(*ids: str, **extra: object) -> bytes:
    return json.dumps({"files": [{"id": i, "name": "p.jpg"} for i in ids], **extra}).encode()


HOSTILE = {
    "deep nesting": b'{"files": [{"id": "' + A.encode() + b'", "x": ' + b"[" * 5000
                    + b"]" * 5000 + b"}]}",
    "very deep nesting": b"[" * 400_000 + b"]" * 400_000,
    "nesting one level too deep": b'{"files": [{"id": "' + A.encode()
                                  + b'", "x": {"y": {"z": 1}}}]}',
    "eleven files": payload(*IDS[:11]),
    "no files": payload(),
    "files not a list": b'{"files": {"id": "' + A.encode() + b'"}}',
    "entry not an object": b'{"files": ["' + A.encode() + b'"]}',
    "id missing": b'{"files": [{"name": "x"}]}',
    "id not a string": b'{"files": [{"id": 12345678901234567890123456}]}',
    "id upper case": payload("A" * 26),
    "id too short": payload("a" * 25),
    "id too long": payload("a" * 27),
    "id outside base32": payload("a" * 25 + "1"),
    "id path traversal": payload("../../../etc/passwd"),
    "id with a newline": payload("a" * 26 + "\n"),
    "the same file twice": payload(A, A),
    "not an object": json.dumps([{"files": [{"id": A}]}]).encode(),
    "not JSON": b"files: " + A.encode(),
    "empty": b"",
    "trailing garbage": payload(A) + b" x",
    "not UTF-8": payload(A)[:-2] + b'"\xff"}',
    "UTF-16": payload(A).decode().encode("utf-16"),
    "byte order mark": b"\xef\xbb\xbf" + payload(A),
    "raw surrogate bytes": payload(A) + b"\xed\xa0\x80",
    "duplicate key": b'{"files": [{"id": "' + A.encode() + b'"}], "files": [{"id": "'
                     + ("b" * 26).encode() + b'"}]}',
    "duplicate id key": b'{"files": [{"id": "' + A.encode() + b'", "id": "' + ("b" * 26).encode()
                        + b'"}]}',
    "NaN": b'{"files": [{"id": "' + A.encode() + b'", "size": NaN}]}',
    "Infinity": b'{"files": [{"id": "' + A.encode() + b'", "size": -Infinity}]}',
    "too large": payload(A, text="x" * MAX_PAYLOAD_BYTES),
}


@pytest.mark.parametrize("attack", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_payloads_are_refused_quickly(attack: str) -> None:
    started = time.perf_counter()
    with pytest.raises(AttachmentError) as refused:
        file_ids(HOSTILE[attack])
    assert time.perf_counter() - started < 0.5
    assert refused.value.reason
    assert isinstance(refused.value, UsageError)  # a refused message, not a broken connection


def test_huge_numbers_are_never_converted() -> None:
    # Python refuses int() of more than 4,300 digits, and converting fewer is quadratic:
    # numbers are skipped, so a caption's size field costs nothing.
    big = b'{"files": [{"id": "' + A.encode() + b'", "size": ' + b"9" * 60_000 \
        + b', "w": 1e999999, "h": -0.' + b"1" * 10_000 + b"e-99999}]}"
    started = time.perf_counter()
    assert file_ids(big) == (A,)
    assert time.perf_counter() - started < 0.1


def test_the_callers_limit_bounds_the_parse() -> None:
    with pytest.raises(AttachmentError):
        file_ids(payload(A, text="x" * 100), max_bytes=64)
    assert file_ids(payload(A), max_bytes=1000) == (A,)


def test_what_is_read_and_what_is_carried() -> None:
    assert file_ids(payload(A)) == (A,)
    ten = IDS[:MAX_FILES_PER_MESSAGE]
    assert file_ids(payload(*ten, text="caption \u00e9\U0001f600")) == tuple(ten)
    full = json.dumps({"files": [{"id": A, "name": "photo.jpg", "type": "image/jpeg",
                                  "size": 12345, "sha256": "ab" * 32, "width": 4000,
                                  "height": 3000, "thumb": {"w": 96}}],
                       "text": "optional caption", "app": [1, 2, 3]}).encode()
    assert file_ids(full) == (A,)
    assert file_ids(b'{"files":[{"id":"\\u0061' + b"a" * 25 + b'"}]}') == (A,)  # escapes


def test_file_ids_and_the_flag_and_status_values() -> None:
    assert is_file_id(A)
    assert is_file_id("abcdefghijklmnopqrstuvwxyz")
    for bad in ("", "a" * 25, "a" * 27, "A" * 26, "a" * 25 + "8", None, 26, b"a" * 26):
        assert not is_file_id(bad)
    assert FILE == Flag.FILE == 0x40
    assert FILE & Flag.CLIENT_MASK  # a client's bit: the server keeps it
    assert Status.INVALID_FILE == 0x89
