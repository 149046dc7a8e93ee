"""Media in the one-file executable (issue 15): the server process, not only a worker.

An image upload is cleaned and thumbnailed by frozen image workers, and a link
preview is fetched (httpx, idna and the HTML parser made it into the bundle)
with its image stored: what `tidings serve` from dist/tidings does for a user.
"""

from __future__ import annotations

import http.client
import http.server
import io
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

from tests.media.images.test_frozen import binary  # noqa: F401 (the fixture)
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


class _Site(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/card.png":
            out = io.BytesIO()
            Image.new("RGB", (900, 500), "red").save(out, "PNG")
            body, kind = out.getvalue(), "image/png"
        else:
            body = (b'<html><head><title>Frozen</title>'
                    b'<meta property="og:image" content="/card.png"></head></html>')
            kind = "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[int]:
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        yield web.server_address[1]
    finally:
        web.shutdown()
        web.server_close()


def test_frozen_server_cleans_images_and_fetches_previews(binary: Path,  # noqa: F811
                                                          tmp_path: Path, site: int) -> None:
    data = tmp_path / "data"
    secret = subprocess.run([str(binary), "--data-dir", str(data), "app", "secret"],
                            capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    config = tmp_path / "tidings.toml"
    config.write_text(f'[storage]\ndata_dir = "{data}"\n'
                      f'[media.previews]\nallow = ["127.0.0.1"]\nports = [{site}]\n')
    server = ServerProcess(data, command=[str(binary), "--config", str(config)])
    server.start()
    try:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        auth = {"Authorization": f"Bearer {secret}"}
        conn.request("POST", "/v1/users", json.dumps({"address": "alice"}), auth)
        conn.getresponse().read()
        conn.request("POST", "/v1/users/alice/tokens", "{}", auth)
        user = {"Authorization": f"Bearer {json.loads(conn.getresponse().read())['token']}"}
        photo = io.BytesIO()
        Image.new("RGB", (1000, 800), "blue").save(photo, "JPEG")
        conn.request("POST", "/v1/files?name=x.jpg", photo.getvalue(),
                     {**user, "Content-Type": "image/jpeg"})
        response = conn.getresponse()
        doc = json.loads(response.read())
        assert (response.status, doc["type"], doc["width"]) == (201, "image/jpeg", 1000)
        conn.request("GET", f"/v1/files/{doc['id']}/thumbnail?size=320", headers=user)
        response = conn.getresponse()
        assert Image.open(io.BytesIO(response.read())).size == (320, 256)
        url = quote(f"http://127.0.0.1:{site}/post", safe="")
        conn.request("GET", f"/v1/previews?url={url}", headers=user)
        response = conn.getresponse()
        preview = json.loads(response.read())
        assert (response.status, preview["title"]) == (200, "Frozen")
        assert preview["image"]["url"].startswith("/v1/files/")
        conn.close()
    finally:
        server.stop()
    assert "Traceback" not in server.output, server.output
