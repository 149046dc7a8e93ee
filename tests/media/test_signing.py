"""Signed links: only the right file, only before expiry, only with our key."""

from __future__ import annotations

import pytest

from appliance.errors import ForbiddenError
from appliance.media.signing import link_query, sign, verify

KEY = b"k" * 32
FILE = "a" * 26


def test_a_fresh_link_verifies() -> None:
    verify(KEY, FILE, "2000", sign(KEY, FILE, 2000), now_s=1999)
    assert link_query(KEY, FILE, 5) == f"exp=5&sig={sign(KEY, FILE, 5)}"


@pytest.mark.parametrize(("file_id", "expires", "signature", "now", "why"), [
    (FILE, "2000", sign(KEY, FILE, 2000), 2000, "expired"),
    ("b" * 26, "2000", sign(KEY, FILE, 2000), 0, "does not match"),  # another file
    (FILE, "2001", sign(KEY, FILE, 2000), 0, "does not match"),  # a later expiry
    (FILE, "2000", sign(b"x" * 32, FILE, 2000), 0, "does not match"),  # another key
    (FILE, "2000", "", 0, "malformed"),
    (FILE, "2000", "é" * 43, 0, "malformed"),
    (FILE, "-1", sign(KEY, FILE, 2000), 0, "not a time"),
    (FILE, "9" * 40, sign(KEY, FILE, 2000), 0, "not a time"),
    (FILE, "", sign(KEY, FILE, 2000), 0, "not a time"),
])
def test_a_bad_link_is_refused(file_id: str, expires: str, signature: str, now: int,
                               why: str) -> None:
    with pytest.raises(ForbiddenError, match=why):
        verify(KEY, file_id, expires, signature, now_s=now)
