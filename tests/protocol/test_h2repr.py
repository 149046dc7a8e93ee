"""The cheap frame repr says what hyperframe's says (`appliance.protocol.h2repr`)."""

from __future__ import annotations

import hyperframe.frame
import pytest
from hyperframe.frame import DataFrame, HeadersFrame

from appliance.protocol import h2repr


@pytest.mark.parametrize("size", [0, 1, 9, 10, 11, 16_384])
def test_the_text_is_the_libraries_own(size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    assert h2repr._first_bytes_repr(data) == h2repr.ORIGINAL_REPR(data)
    frame = DataFrame(1, data)
    shown = repr(frame)
    hyperframe.frame._raw_data_repr = h2repr.ORIGINAL_REPR
    try:
        assert repr(frame) == shown
    finally:
        hyperframe.frame._raw_data_repr = h2repr._first_bytes_repr


def test_the_transport_installs_it() -> None:
    import appliance.transport.http2  # noqa: F401 - importing it installs the repr

    assert hyperframe.frame._raw_data_repr is h2repr._first_bytes_repr
    assert "<hex:" in repr(HeadersFrame(1, b"\x82" * 40))
