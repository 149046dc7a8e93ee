"""The FILE payload convention as the SDK reads and writes it (pure; issue 15).

A payload comes from another client: whatever it holds, reading it never
raises and never takes more than the frame it came in.
"""

from __future__ import annotations

import json

import pytest

from appliance.protocol.attachments import MAX_FILES_PER_MESSAGE, file_ids
from appliance.protocol.wire import Flag
from appliance.sdk import FileInfo, IncomingMessage, StoredMessage, file_payload, parse_file_payload
from appliance.sdk.models import OutgoingMessage

ID = "abcdefghijklmnopqrstuvwxyz"[:26]
PHOTO = FileInfo(ID, "photo.jpg", "image/jpeg", 12345, "ab" * 32, 4000, 3000)


def _incoming(payload: bytes, flags: int = Flag.FILE) -> IncomingMessage:
    return IncomingMessage(id=1, sender="alice", peer="alice", group_id=0, refid=0, seq=1,
                           timestamp_ms=0, expiry_s=60, type=0, flags=flags, priority=0,
                           payload=payload, outgoing_copy=False)


def test_a_payload_round_trips_and_the_server_reads_its_ids() -> None:
    payload = file_payload([PHOTO], "the view é")
    assert json.loads(payload) == {"files": [{
        "id": ID, "name": "photo.jpg", "type": "image/jpeg", "size": 12345, "sha256": "ab" * 32,
        "width": 4000, "height": 3000}], "text": "the view é"}
    assert file_ids(payload) == (ID,)  # what the server checks and grants
    assert parse_file_payload(payload) == ((PHOTO,), "the view é")
    message = _incoming(payload)
    assert (message.files, message.caption, message.payload) == ((PHOTO,), "the view é",
                                                                 payload)
    assert PHOTO.is_image
    assert "text" not in json.loads(file_payload([PHOTO]))


def test_files_only_with_the_file_flag() -> None:
    payload = file_payload([PHOTO])
    assert _incoming(payload, flags=Flag.DEFAULT).files == ()
    assert _incoming(payload, flags=Flag.DEFAULT).caption is None
    out = OutgoingMessage(id=1, peer="bob", group_id=0, payload=payload, flags=Flag.FILE)
    assert out.files == (PHOTO,)
    stored = StoredMessage(id=1, outgoing=False, sender="a", peer="a", group_id=0, refid=0,
                           timestamp_ms=0, type=0, flags=Flag.FILE, priority=0, status=2,
                           read=False, payload=payload)
    assert (stored.files, stored.caption) == ((PHOTO,), None)


JUNK = [
    b"", b"\xff\xfe{}", b"not json", b"[]", b"null", b'"files"', b'{"files": {}}',
    b'{"files": "x"}', b'{"files": [1, "a", null, []]}', b'{"files": [{"id": "short"}]}',
    b'{"files": [{"id": "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}]}',  # upper case: not an id
    b"[" * 100_000 + b"]" * 100_000,  # deeper than the recursion limit
    b'{"files": [{"id": "' + ID.encode() + b'", "size": ' + b"9" * 5000 + b"}]",  # cut JSON
    b'{"files": NaN}', b'{"files": [{"id": "' + ID.encode() + b'"}]' + b"x",
]


@pytest.mark.parametrize("payload", JUNK, ids=range(len(JUNK)))
def test_junk_gives_no_files_and_keeps_the_payload(payload: bytes) -> None:
    message = _incoming(payload)
    assert message.files == ()
    assert message.payload == payload


def test_what_an_entry_lies_about_takes_its_default() -> None:
    entry = {"id": ID, "name": 7, "type": ["x"], "size": -5, "sha256": "zz" * 32,
             "width": True, "height": 10**30, "extra": {"a": 1}}
    payload = json.dumps({"files": [entry, {"name": "no id"}], "text": 5}).encode()
    files, caption = parse_file_payload(payload)
    assert files == (FileInfo(ID, "file", "application/octet-stream", 0, None, 0, 0),)
    assert caption is None
    huge = b'{"files": [{"id": "%s", "size": %s}]}' % (ID.encode(), b"9" * 5000)
    assert parse_file_payload(huge)[0][0].size == 0  # never converted


def test_at_most_the_convention_s_number_of_files_is_read() -> None:
    many = [FileInfo(ID[:-2] + f"{i:02d}".translate(str.maketrans("0123456789", "abcdefghij")),
                     "f", "text/plain", 1) for i in range(MAX_FILES_PER_MESSAGE + 5)]
    files, _ = parse_file_payload(file_payload(many))
    assert len(files) == MAX_FILES_PER_MESSAGE
