"""The log never carries a credential, whatever logs it (issue 12, finding 8)."""

from __future__ import annotations

import logging

import pytest

from appliance.cli.logs import REDACTED, RedactSecrets, redact


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
