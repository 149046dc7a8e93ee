"""The FILE flag's payload convention (PROTOCOL.md §3.3.1, issue 15): pure, no I/O.

A MESSAGE with flag FILE (bit 6) carries UTF-8 JSON naming the files it shares::

    {"files": [{"id": "<file id>", "name": "photo.jpg", "type": "image/jpeg",
                "size": 12345, "sha256": "<hex>", "width": 4000, "height": 3000}],
     "text": "optional caption"}

The server reads ``files[*].id`` only (`file_ids`); everything else is for the
recipients' apps.  Parsing is bounded: the payload's length, the nesting
depth, the number of files; numbers are never converted (an integer of
thousands of digits costs nothing), a key repeated in one object is refused
(two parsers must not read two different messages), and the text must be
UTF-8 (no UTF-16 or UTF-32 detection, no byte order mark).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, TypeGuard

from appliance.errors import AttachmentError
from appliance.protocol.wire.frames import Flag

#: The MESSAGE flag (PROTOCOL.md §3.3), bit 6.
FILE: Final = Flag.FILE
#: Files one message shares at most.
MAX_FILES_PER_MESSAGE: Final = 10
#: Containers nested at most: the payload object, `files`, a file's object, and
#: one more level inside an entry for the apps' own use.
MAX_DEPTH: Final = 4
#: Bytes parsed at most whatever the caller's limit (the engine refuses larger
#: payloads as TOO_LARGE first; its default is 64 KiB).
MAX_PAYLOAD_BYTES: Final = 1 << 20
#: A file id: 16 random bytes in lowercase RFC 4648 base32 without padding.
FILE_ID_RE: Final = re.compile(r"[a-z2-7]{26}")


def is_file_id(value: object) -> TypeGuard[str]:
    """Whether `value` is a well-formed file id (a str of 26 base32 characters)."""
    return isinstance(value, str) and FILE_ID_RE.fullmatch(value) is not None


def _number(_: str) -> None:
    return None  # never converted: the server has no use for numbers here


def _constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("a key repeated in one object")
    return result


def _check_depth(value: Any) -> None:
    """Refuse containers nested deeper than `MAX_DEPTH` (iterative: no recursion)."""
    level: list[Any] = [value]
    for _ in range(MAX_DEPTH):
        level = [child for node in level if isinstance(node, dict | list)
                 for child in (node.values() if isinstance(node, dict) else node)]
        if not level:
            return
    if any(isinstance(node, dict | list) for node in level):
        raise AttachmentError(f"JSON nested deeper than {MAX_DEPTH} levels")


def file_ids(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> tuple[str, ...]:
    """The ids of the files a FILE message shares, in payload order.

    Raises:
        AttachmentError: larger than `max_bytes` (or `MAX_PAYLOAD_BYTES`), not
            UTF-8, not JSON, nested too deep, not an object with ``files`` a
            list of 1 to `MAX_FILES_PER_MESSAGE` objects each with a valid,
            distinct ``id``.
    """
    if len(payload) > min(max_bytes, MAX_PAYLOAD_BYTES):
        raise AttachmentError(f"a payload of {len(payload)} bytes")
    try:
        text = payload.decode("utf-8")
        document = json.loads(text, object_pairs_hook=_unique, parse_int=_number,
                              parse_float=_number, parse_constant=_constant)
    except RecursionError:
        raise AttachmentError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise AttachmentError(f"not UTF-8 JSON: {str(exc)[:100]}") from None
    _check_depth(document)
    if not isinstance(document, dict):
        raise AttachmentError("the payload is not a JSON object")
    files = document.get("files")
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES_PER_MESSAGE:
        raise AttachmentError(f'"files" must list 1 to {MAX_FILES_PER_MESSAGE} files')
    ids: list[str] = []
    for index, entry in enumerate(files):
        found = entry.get("id") if isinstance(entry, dict) else None
        if not is_file_id(found):
            raise AttachmentError(f'"files"[{index}] has no valid "id"')
        ids.append(found)
    if len(set(ids)) != len(ids):
        raise AttachmentError("a file is listed twice")
    return tuple(ids)
