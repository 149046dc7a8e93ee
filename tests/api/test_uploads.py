"""tus (`appliance.api.uploads`) as a standard tus client sees it (issue 15).

Found by the SDK's tests (H-sdk): these fail until the server is fixed.
"""

from __future__ import annotations

import base64
import http.client
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def alice(data_dir: Path) -> Iterator[tuple[ServerProcess, str]]:
    tokens, _ = provision(data_dir, ["alice"])
    server = ServerProcess(data_dir)
    server.start()
    try:
        yield server, tokens["alice"]
    finally:
        server.stop()


def _request(server: ServerProcess, token: str, method: str, path: str, body: bytes = b"",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.request(method, path, body=body, headers={
        "Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0", **(headers or {})})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}


def test_a_finished_image_reports_its_upload_length_as_offset(
        alice: tuple[ServerProcess, str]) -> None:
    """tus §PATCH/§HEAD: the offset of a finished upload is its Upload-Length.  tus-js-client
    and TUSKit decide an upload is done when ``Upload-Offset == size``; the server answered
    the size of the *cleaned* image instead, so such a client never sees its upload finish
    (a larger offset: it sends past the end; a smaller one: it PATCHes a complete upload
    and gets 409 for ever)."""
    server, token = alice
    image = Image.frombytes("RGB", (64, 48), os.urandom(64 * 48 * 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the server's clean copy differs from these bytes
    out = io.BytesIO()
    image.save(out, "JPEG", quality=50, exif=exif)
    data = out.getvalue()
    name = base64.b64encode(b"noise.jpg").decode()
    status, headers = _request(server, token, "POST", "/v1/uploads", headers={
        "Upload-Length": str(len(data)), "Upload-Metadata": f"filename {name}"})
    assert status == 201
    upload = headers["location"]
    status, headers = _request(server, token, "PATCH", upload, data, {
        "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert status == 204
    assert headers["upload-offset"] == str(len(data))
    status, headers = _request(server, token, "HEAD", upload)
    assert (status, headers["upload-offset"], headers["upload-length"]) == (
        200, str(len(data)), str(len(data)))
