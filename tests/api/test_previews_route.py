"""``GET /v1/previews`` through a real server and a real token (issue 15).

The page is served by a local web server the operator allows
(``[media.previews] allow`` and ``ports``): the default policy would refuse
127.0.0.1 as loopback, which the second test shows through the same route.
"""

from __future__ import annotations

import http.client
import http.server
import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1200, 600), (0, 128, 255)).save(out, "PNG")
    return out.getvalue()


PAGE = b"""<!doctype html><html><head><meta charset="utf-8">
<title>Plain title</title>
<meta property="og:title" content="The Tidings launch">
<meta property="og:description" content="Messaging you run yourself.">
<meta property="og:site_name" content="Tidings">
<meta property="og:image" content="/card.png">
<link rel="canonical" href="/launch">
</head><body>hello</body></html>"""


class _Site(http.server.BaseHTTPRequestHandler):
    image = _png()

    def do_GET(self) -> None:
        body, kind = (self.image, "image/png") if self.path == "/card.png" else (
            PAGE, "text/html; charset=utf-8")
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _get(server: ServerProcess, path: str, token: str | None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def _token(server: ServerProcess, secret: str) -> str:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    auth = {"Authorization": f"Bearer {secret}"}
    conn.request("POST", "/v1/users", json.dumps({"address": "alice"}), auth)
    conn.getresponse().read()
    conn.request("POST", "/v1/users/alice/tokens", "{}", auth)
    token: str = json.loads(conn.getresponse().read())["token"]
    conn.close()
    return token


def test_a_real_preview_with_its_image(data_dir: Path, site: int) -> None:
    secret = subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(data_dir),
                             "app", "secret"], capture_output=True, text=True, check=True,
                            timeout=60).stdout.strip()
    server = ServerProcess.configured(
        data_dir, f'[storage]\ndata_dir = "{data_dir}"\n'
        f'[media.previews]\nallow = ["127.0.0.1/32"]\nports = [{site}]\n')
    server.start()
    try:
        token = _token(server, secret)
        url = f"http://127.0.0.1:{site}/post?id=1"
        status, _, body = _get(server, f"/v1/previews?url={quote(url, safe='')}", token)
        assert status == 200, server.output
        doc = json.loads(body)
        assert (doc["title"], doc["description"], doc["site_name"]) == (
            "The Tidings launch", "Messaging you run yourself.", "Tidings")
        assert doc["canonical_url"] == f"http://127.0.0.1:{site}/launch"
        assert doc["image"] is not None, server.output
        status, headers, image = _get(server, doc["image"]["url"], None)  # a signed link
        thumb = Image.open(io.BytesIO(image))
        assert (status, headers["content-type"], thumb.format) == (200, "image/webp", "WEBP")
        assert max(thumb.size) <= 640
        assert _get(server, f"/v1/previews?url={quote(url, safe='')}", None)[0] == 401
        # Loopback on another address is not in the allow list: refused, naming why.
        status, _, body = _get(server, "/v1/previews?url=" + quote(
            f"http://127.0.0.2:{site}/", safe=""), token)
        assert status == 422
        assert json.loads(body)["field"] == "url"
        status, _, body = _get(server, "/v1/previews?url=file:///etc/passwd", token)
        assert status == 422
    finally:
        server.stop()
    assert "Traceback" not in server.output, server.output
