"""The pool <-> worker messages: bounded, and every field of an answer checked."""

from __future__ import annotations

import pytest

from appliance.media.images.model import ImageInfo, ImageLimits
from appliance.media.images.protocol import (
    LENGTH,
    MAX_MESSAGE_BYTES,
    MIN_WORKER_MEMORY_BYTES,
    WorkerMessageError,
    body_length,
    decode,
    encode,
    info_from_wire,
    info_to_wire,
    limits_from_wire,
    limits_to_wire,
    thumbnail_args,
    worker_memory_bytes,
)

GOOD = {"format": "PNG", "mime": "image/png", "width": 10, "height": 20, "frames": 1}


def test_a_message_round_trips_with_its_length_first() -> None:
    frame = encode({"op": "probe", "src": "/a"})
    assert body_length(frame[:4]) == len(frame) - 4
    assert decode(frame[4:]) == {"op": "probe", "src": "/a"}
    info = ImageInfo("WEBP", "image/webp", 320, 240, 1)
    assert info_from_wire(info_to_wire(info)) == info
    limits = ImageLimits(64_000_000, 16384, 1000)
    assert limits_from_wire(limits_to_wire(limits)) == limits


def test_oversized_messages_are_refused_both_ways() -> None:
    with pytest.raises(WorkerMessageError):
        encode({"src": "x" * MAX_MESSAGE_BYTES})
    with pytest.raises(WorkerMessageError):
        body_length(LENGTH.pack(MAX_MESSAGE_BYTES + 1))
    with pytest.raises(WorkerMessageError):
        body_length(b"\xff\xff\xff\xff")


@pytest.mark.parametrize("body", [b"\xff\xfe", b"not json", b"[1, 2]", b"42", b""])
def test_what_is_not_a_json_object_is_refused(body: bytes) -> None:
    with pytest.raises(WorkerMessageError):
        decode(body)


@pytest.mark.parametrize("change", [
    {"format": "TIFF", "mime": "image/tiff"},  # not one we produce
    {"mime": "text/html"},  # does not match the format
    {"width": 0}, {"height": -1}, {"frames": 1 << 30},
    {"width": True},  # a bool is not a size
    {"width": 10.5}, {"height": "20"},
])
def test_an_answer_from_a_subverted_worker_is_checked(change: dict[str, object]) -> None:
    with pytest.raises(WorkerMessageError):
        info_from_wire({**GOOD, **change})
    with pytest.raises(WorkerMessageError):
        info_from_wire([GOOD])


@pytest.mark.parametrize("value", [None, [1, 2], [1, 2, 0], [1, 2, True], [1, 2, 1 << 50],
                                   [1, 2, "3"]])
def test_limits_on_the_wire_are_checked(value: object) -> None:
    with pytest.raises(WorkerMessageError):
        limits_from_wire(value)


def test_thumbnail_arguments_are_checked() -> None:
    assert thumbnail_args({"size": 96, "fmt": "webp", "square": True}) == (96, "webp", True,
                                                                           True)
    for bad in ({"size": 0, "fmt": "webp", "square": False},
                {"size": 5000, "fmt": "webp", "square": False},
                {"size": 96, "fmt": "png", "square": False},
                {"size": 96, "fmt": "jpeg", "square": 1},
                {"size": 96, "fmt": "jpeg", "square": False, "draft": "yes"}):
        with pytest.raises(WorkerMessageError):
            thumbnail_args(bad)


def test_worker_memory_grows_with_the_pixel_bound() -> None:
    assert worker_memory_bytes(ImageLimits(1000, 100, 1)) == MIN_WORKER_MEMORY_BYTES
    default = worker_memory_bytes(ImageLimits(64_000_000, 16384, 1000))
    assert default > MIN_WORKER_MEMORY_BYTES
    assert default >= 3 * 4 * 64_000_000
