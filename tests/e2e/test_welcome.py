"""WELCOME's extension fields (PROTOCOL.md §3.2, §8) from a real `tidings serve`, raw bytes.

A client that sets HelloFlag.EXTENSIONS reads the configured limits and the
FEATURES bits after a NUL; a client that does not gets WELCOME exactly as
before the fields existed, byte for byte.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import __version__
from appliance.protocol.wire import HelloFlag, WelcomeField
from appliance.protocol.wire.constants import PREFACE, FrameType
from tests.support.provision import provision, write_config
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

#: Every value differs from its default, so a field that ignored the config would show.
LIMITS = {"max_payload_bytes": 30_000, "max_expiry_s": 86_400, "window": 256, "max_devices": 5,
          "keepalive_s": 45, "max_frame_bytes": 40_000}
_HEADER = struct.Struct(">IB")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    data = tmp_path / "data"
    data.mkdir()
    tokens, _ = provision(data, ["alice"])
    config = write_config(tmp_path / "tidings.toml", **LIMITS)
    server = ServerProcess(data, env={"TIDINGS_CONFIG": str(config)})
    server.start()
    try:
        yield server, tokens["alice"]
    finally:
        assert server.stop() == 0


def hello(token: bytes, device: bytes, flags: int) -> bytes:
    """PREFACE and a HELLO frame, written out by hand (§1, §3.1)."""
    body = (struct.pack(">HIH", 30, flags, len(token)) + token
            + struct.pack(">B", len(device)) + device)
    return PREFACE + _HEADER.pack(len(body), FrameType.HELLO) + body


async def raw_welcome(server: ServerProcess, token: str, flags: int) -> bytes:
    """The whole first frame the server answers a HELLO with (header included)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(hello(token.encode(), b"raw", flags))
        async with asyncio.timeout(10):
            header = await reader.readexactly(_HEADER.size)
            length, kind = _HEADER.unpack(header)
            assert kind == FrameType.WELCOME
            return header + await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()


def old_welcome(server_time_ms: int) -> bytes:
    """WELCOME as a server before the extension fields wrote it, for alice and LIMITS."""
    body = (struct.pack(">QIIB", server_time_ms, LIMITS["max_frame_bytes"],
                        LIMITS["keepalive_s"], len(b"alice"))
            + b"alice" + f"tidings/{__version__}".encode())
    return _HEADER.pack(len(body), FrameType.WELCOME) + body


def test_a_client_with_extensions_reads_the_configured_limits(
        served: tuple[ServerProcess, str]) -> None:
    server, token = served
    frame = asyncio.run(raw_welcome(server, token, HelloFlag.EXTENSIONS))
    (server_time_ms,) = struct.unpack_from(">Q", frame, _HEADER.size)
    base = old_welcome(server_time_ms)
    fields = frame[len(base):]
    # The same bytes as before, a longer length, then NUL and 5-byte entries.
    assert frame[_HEADER.size:len(base)] == base[_HEADER.size:]
    assert fields[:1] == b"\0"
    assert (len(fields) - 1) % 5 == 0
    info = dict(struct.iter_unpack(">BI", fields[1:]))
    assert {tag: info[tag] for tag in (WelcomeField.MAX_PAYLOAD_BYTES, WelcomeField.MAX_EXPIRY_S,
                                        WelcomeField.WINDOW, WelcomeField.MAX_DEVICES)} == {
        WelcomeField.MAX_PAYLOAD_BYTES: LIMITS["max_payload_bytes"],
        WelcomeField.MAX_EXPIRY_S: LIMITS["max_expiry_s"],
        WelcomeField.WINDOW: LIMITS["window"],
        WelcomeField.MAX_DEVICES: LIMITS["max_devices"]}
    assert WelcomeField.FEATURES in info


def test_a_client_without_extensions_gets_the_old_welcome_byte_for_byte(
        served: tuple[ServerProcess, str]) -> None:
    server, token = served
    frame = asyncio.run(raw_welcome(server, token, 0))
    (server_time_ms,) = struct.unpack_from(">Q", frame, _HEADER.size)
    assert frame == old_welcome(server_time_ms)
    assert b"\0" not in frame[_HEADER.size + 17:]  # no NUL after the fixed fields
    # Reserved bits other than EXTENSIONS are ignored: still the old WELCOME.
    other = asyncio.run(raw_welcome(server, token, 0xFFFF_FFFE))
    (other_time_ms,) = struct.unpack_from(">Q", other, _HEADER.size)
    assert other == old_welcome(other_time_ms)
