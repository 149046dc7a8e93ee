"""Files end to end (issue 15): a real server; curl over HTTP/1.1 and HTTP/2, raw sockets.

Uploads one-shot and with tus (resumed after a cut connection), downloads
whole and by range, access (uploader, recipients of a FILE message, signed
links), quotas as problem+json, and what a browser is told about each file.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from appliance.protocol.attachments import FILE
from appliance.protocol.wire import Message, Status
from tests.support.client import Client
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

MAX_FILE = 4 * 1024 * 1024
MAX_APP = 10 * 1024 * 1024


@dataclass
class World:
    server: ServerProcess
    secret: str
    tokens: dict[str, str]
    data_dir: Path

    def request(self, method: str, path: str, body: bytes | None = None, *,
                user: str | None = "alice", headers: dict[str, str] | None = None
                ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
        sent = dict(headers or {})
        if user is not None:
            sent["Authorization"] = f"Bearer {self.tokens[user]}"
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def upload(self, data: bytes, *, user: str = "alice", name: str = "notes.txt",
               content_type: str = "text/plain") -> dict[str, Any]:
        status, _, body = self.request("POST", f"/v1/files?name={name}", data, user=user,
                                       headers={"Content-Type": content_type})
        assert status == 201, body
        doc: dict[str, Any] = json.loads(body)
        return doc

    def curl(self, *args: str, user: str | None = "alice") -> subprocess.CompletedProcess[bytes]:
        auth = ["-H", f"Authorization: Bearer {self.tokens[user]}"] if user else []
        return subprocess.run(["curl", "-sS", *auth, *args], capture_output=True, timeout=60,
                              check=True)

    def url(self, path: str) -> str:
        return f"http://{self.server.host}:{self.server.port}{path}"


def _cli(data_dir: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


@pytest.fixture
def world(data_dir: Path) -> Iterator[World]:
    secret = _cli(data_dir, "app", "secret")
    server = ServerProcess.configured(
        data_dir, f'[storage]\ndata_dir = "{data_dir}"\n'
        f"[media]\nmax_file_bytes = {MAX_FILE}\nmax_app_bytes = {MAX_APP}\n"
        "thumbnail_sizes = [96, 320]\npicture_sizes = [64]\n")
    server.start()
    tokens = {}
    try:
        for name in ("alice", "bob", "carol"):
            conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
            auth = {"Authorization": f"Bearer {secret}"}
            conn.request("POST", "/v1/users", json.dumps({"address": name}), auth)
            conn.getresponse().read()
            conn.request("POST", f"/v1/users/{name}/tokens", json.dumps({}), auth)
            tokens[name] = json.loads(conn.getresponse().read())["token"]
            conn.close()
        yield World(server, secret, tokens, data_dir)
    finally:
        server.stop()
    assert "Traceback" not in server.output, server.output


def _payload(size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // 32 + 1))[:size]


def test_curl_uploads_and_downloads_over_http1_and_http2(world: World, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "upload.bin"
    source.write_bytes(data)
    for version in ("--http1.1", "--http2-prior-knowledge"):
        done = world.curl(version, "-X", "POST", "--data-binary", f"@{source}",
                          "-H", "Content-Type: application/x-thing",
                          world.url("/v1/files?name=report%20%C3%A9.bin"))
        doc = json.loads(done.stdout)
        assert (doc["size"], doc["sha256"], doc["complete"]) == (
            len(data), hashlib.sha256(data).hexdigest(), True)
        assert doc["name"] == "report é.bin"
        out = tmp_path / f"down{version}"
        head = world.curl(version, "-D", "-", "-o", str(out), world.url(f"/v1/files/{doc['id']}"))
        assert out.read_bytes() == data
        headers = head.stdout.decode().lower()
        assert "x-content-type-options: nosniff" in headers
        assert "content-disposition: attachment" in headers  # not something to render
        assert "content-type: application/x-thing" in headers
        assert f'etag: "{doc["sha256"]}"' in headers
        ranged = world.curl(version, "-D", "-", "-r", "100-199",
                            world.url(f"/v1/files/{doc['id']}"))
        raw_head, _, body = ranged.stdout.partition(b"\r\n\r\n")
        assert raw_head.startswith((b"HTTP/1.1 206", b"HTTP/2 206"))
        assert b"content-range: bytes 100-199/" in raw_head.lower()
        assert body == data[100:200]
        tail = world.curl(version, "-r", "-5", world.url(f"/v1/files/{doc['id']}"))
        assert tail.stdout == data[-5:]


def test_range_past_the_end_and_conditional_requests(world: World) -> None:
    doc = world.upload(b"0123456789")
    status, headers, _ = world.request("GET", f"/v1/files/{doc['id']}",
                                       headers={"Range": "bytes=10-"})
    assert (status, headers["content-range"]) == (416, "bytes */10")
    etag = f'"{doc["sha256"]}"'
    assert world.request("GET", f"/v1/files/{doc['id']}",
                         headers={"If-None-Match": etag})[0] == 304
    status, _, body = world.request("GET", f"/v1/files/{doc['id']}",
                                    headers={"Range": "bytes=0-1", "If-Range": '"stale"'})
    assert (status, body) == (200, b"0123456789")  # the range is for another version
    assert world.request("HEAD", f"/v1/files/{doc['id']}")[1]["content-length"] == "10"


def test_only_the_uploader_and_recipients_read_a_file(world: World) -> None:
    doc = world.upload(b"for bob only")
    path = f"/v1/files/{doc['id']}"
    assert world.request("GET", path, user="alice")[0] == 200
    status, headers, body = world.request("GET", path, user="bob")
    assert status == 403
    assert headers["content-type"] == "application/problem+json"
    assert world.request("GET", path, user=None)[0] == 401
    assert world.request("GET", "/v1/files/" + "a" * 26, user="alice")[0] == 404
    assert world.request("GET", "/v1/files/../../etc/passwd", user="alice")[0] == 404

    async def send() -> None:
        alice = await Client.connect(world.server.host, world.server.port, world.tokens["alice"])
        payload = json.dumps({"files": [{"id": doc["id"], "name": "x"}]}).encode()
        alice.send(Message(7, b"bob", payload, flags=FILE | 0x3))
        assert (await alice.status()).status == Status.SENT
        # A FILE message naming a file alice may not read is refused, not stored.
        alice.send(Message(8, b"bob", json.dumps({"files": [{"id": "b" * 26}]}).encode(),
                           flags=FILE))
        assert (await alice.status()).status == Status.INVALID_FILE
        await alice.close()

    asyncio.run(send())
    status, _, body = world.request("GET", path, user="bob")
    assert (status, body) == (200, b"for bob only")
    assert world.request("GET", path, user="carol")[0] == 403


def test_a_file_of_another_app_does_not_exist(world: World) -> None:
    doc = world.upload(b"app one")
    other_secret = _cli(world.data_dir, "app", "add", "other").splitlines()[-1].strip()
    conn = http.client.HTTPConnection(world.server.host, world.server.port, timeout=30)
    auth = {"Authorization": f"Bearer {other_secret}"}
    conn.request("POST", "/v1/users", json.dumps({"address": "alice"}), auth)
    conn.getresponse().read()
    conn.request("POST", "/v1/users/alice/tokens", json.dumps({}), auth)
    world.tokens["other-alice"] = json.loads(conn.getresponse().read())["token"]
    conn.close()
    assert world.request("GET", f"/v1/files/{doc['id']}", user="other-alice")[0] == 404
    assert world.request("GET", f"/v1/files/{doc['id']}/meta", user="other-alice")[0] == 404


def test_signed_links_work_without_a_token_until_they_expire(world: World) -> None:
    doc = world.upload(b"shared by link")
    status, _, body = world.request("GET", doc["url"], user=None)  # the upload's own link
    assert (status, body) == (200, b"shared by link")
    status, _, body = world.request("POST", f"/v1/files/{doc['id']}/links",
                                    json.dumps({"ttl_s": 1}).encode())
    link = json.loads(body)
    assert status == 201
    assert world.request("GET", link["url"], user=None)[0] == 200
    forged = link["url"].replace("exp=", "exp=9")
    assert world.request("GET", forged, user=None)[0] == 403
    other = world.upload(b"another file")
    assert world.request("GET", link["url"].replace(doc["id"], other["id"]),
                         user=None)[0] == 403
    time.sleep(1.05)  # past its expiry (ttl_s 1; the server's clock is the one that counts)
    status, _, body = world.request("GET", link["url"], user=None)
    assert status == 403
    assert b"expired" in body
    assert world.request("POST", f"/v1/files/{doc['id']}/links",
                         json.dumps({"ttl_s": 10**9}).encode())[0] == 422


def test_quotas_refuse_with_problem_json(world: World) -> None:
    status, headers, body = world.request("POST", "/v1/files", b"x" * (MAX_FILE + 1))
    problem = json.loads(body)
    assert (status, headers["content-type"]) == (413, "application/problem+json")
    assert (problem["limit"], problem["allowed"]) == ("media.max_file_bytes", MAX_FILE)
    tus = {"Tus-Resumable": "1.0.0", "Upload-Length": str(MAX_FILE)}
    assert world.request("POST", "/v1/uploads", headers=tus)[0] == 201
    assert world.request("POST", "/v1/uploads", headers=tus)[0] == 201
    status, _, body = world.request("POST", "/v1/uploads", headers=tus)
    assert (status, json.loads(body)["limit"]) == (413, "media.max_app_bytes")
    assert world.request("POST", "/v1/files", b"y")[0] == 201  # 8 MiB + 1 byte fits in 10


def _raw_patch(world: World, upload: str, offset: int, data: bytes, declared: int) -> None:
    """A PATCH that sends `data` of a `declared`-byte body, then cuts the connection."""
    with socket.create_connection((world.server.host, world.server.port)) as sock:
        sock.sendall(f"PATCH {upload} HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {world.tokens['alice']}\r\n"
                     "Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
                     f"Upload-Offset: {offset}\r\nContent-Length: {declared}\r\n\r\n".encode()
                     + data)
        sock.shutdown(socket.SHUT_WR)  # the client's network goes away mid-upload
        sock.settimeout(10)
        while sock.recv(65536):
            pass


def test_tus_upload_resumes_after_a_cut_connection(world: World) -> None:
    data = _payload(3 * 1024 * 1024 + 5, seed=7)
    status, _, _ = world.request("OPTIONS", "/v1/uploads", user=None)
    assert status == 204
    meta = f"filename {base64.b64encode(b'movie.bin').decode()}"
    status, headers, _ = world.request("POST", "/v1/uploads", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)), "Upload-Metadata": meta})
    assert status == 201
    upload = headers["location"]
    tus = {"Tus-Resumable": "1.0.0"}
    first = 1024 * 1024 + 3
    _raw_patch(world, upload, 0, data[:first], len(data))
    status, headers, _ = world.request("HEAD", upload, headers=tus)
    assert status == 200
    offset = int(headers["upload-offset"])
    assert offset == first  # everything that arrived was kept
    assert headers["upload-length"] == str(len(data))
    patch = {**tus, "Content-Type": "application/offset+octet-stream"}
    # A stale offset is a conflict; a wrong type and a missing version are refused.
    assert world.request("PATCH", upload, data[:10], headers={**patch, "Upload-Offset": "0"}
                         )[0] == 409
    assert world.request("PATCH", upload, b"x", headers={
        **tus, "Content-Type": "text/plain", "Upload-Offset": str(offset)})[0] == 415
    assert world.request("PATCH", upload, b"x", headers={
        "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)}
                         )[0] == 412
    assert world.request("HEAD", upload, user="bob", headers=tus)[0] == 404  # not bob's
    status, headers, _ = world.request("PATCH", upload, data[offset:],
                                       headers={**patch, "Upload-Offset": str(offset)})
    assert (status, headers["upload-offset"]) == (204, str(len(data)))
    file_path = headers["location"]
    status, _, body = world.request("GET", file_path)
    assert (status, hashlib.sha256(body).digest()) == (200, hashlib.sha256(data).digest())
    meta_doc = json.loads(world.request("GET", file_path + "/meta")[2])
    assert meta_doc["name"] == "movie.bin"
    assert world.request("PATCH", upload, b"x", headers={
        **patch, "Upload-Offset": str(len(data))})[0] == 409  # complete already


def test_tus_termination_frees_the_quota(world: World) -> None:
    tus = {"Tus-Resumable": "1.0.0", "Upload-Length": str(MAX_FILE)}
    uploads = [world.request("POST", "/v1/uploads", headers=tus)[1]["location"]
               for _ in range(2)]
    assert world.request("POST", "/v1/uploads", headers=tus)[0] == 413
    assert world.request("DELETE", uploads[0], headers={"Tus-Resumable": "1.0.0"})[0] == 204
    assert world.request("POST", "/v1/uploads", headers=tus)[0] == 201


def _photo() -> bytes:
    image = Image.new("RGB", (400, 200), "white")
    image.paste((255, 0, 0), (0, 0, 400, 20))  # a red band along the top
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0)}  # GPS
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    return out.getvalue()


def test_images_are_cleaned_and_thumbnailed(world: World) -> None:
    photo = _photo()
    assert b"GPS" in photo or b"\x88\x25" in photo
    doc = world.upload(photo, name="holiday.png", content_type="image/png")  # the name lies
    assert (doc["type"], doc["width"], doc["height"]) == ("image/jpeg", 200, 400)
    status, headers, body = world.request("GET", f"/v1/files/{doc['id']}")
    assert status == 200
    assert headers["content-disposition"].startswith("inline")
    served = Image.open(io.BytesIO(body))
    assert not served.getexif()
    assert b"Exif" not in body
    assert served.size == (200, 400)
    status, headers, body = world.request("GET", f"/v1/files/{doc['id']}/thumbnail?size=96")
    thumb = Image.open(io.BytesIO(body))
    assert (status, headers["content-type"], thumb.format) == (200, "image/webp", "WEBP")
    assert thumb.size == (48, 96)  # portrait, longest side 96
    assert thumb.convert("RGB").getpixel((24, 2))[0] > 200  # the red band is at the top now
    assert world.request("GET", f"/v1/files/{doc['id']}/thumbnail?size=97")[0] == 422
    text = world.upload(b"not an image")
    assert world.request("GET", f"/v1/files/{text['id']}/thumbnail?size=96")[0] == 422


def test_a_broken_image_is_refused_and_nothing_is_kept(world: World) -> None:
    status, _, body = world.request("POST", "/v1/files", _photo()[:300],
                                    headers={"Content-Type": "image/jpeg"})
    assert status == 422, body
    blobs = world.data_dir / "media" / "blobs"
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))


def test_profile_and_group_pictures(world: World) -> None:
    status, _, body = world.request("PUT", "/v1/profile/picture", _photo(),
                                    headers={"Content-Type": "image/jpeg"})
    assert status == 200, body
    status, _, body = world.request("GET", "/v1/users/alice/picture?size=64", user="bob")
    picture = Image.open(io.BytesIO(body))
    assert (status, picture.size, picture.format) == (200, (64, 64), "JPEG")
    assert world.request("GET", "/v1/users/bob/picture", user="alice")[0] == 404
    assert world.request("PUT", "/v1/profile/picture", b"text",
                         headers={"Content-Type": "image/jpeg"})[0] == 422


def test_a_revoked_token_stops_at_once(world: World) -> None:
    doc = world.upload(b"mine")
    assert world.request("GET", f"/v1/files/{doc['id']}")[0] == 200  # cached now
    conn = http.client.HTTPConnection(world.server.host, world.server.port, timeout=30)
    conn.request("DELETE", "/v1/users/alice/tokens",
                 headers={"Authorization": f"Bearer {world.secret}"})
    assert conn.getresponse().status == 200
    conn.close()
    status, headers, _ = world.request("GET", f"/v1/files/{doc['id']}")
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")


def test_upload_starts_are_rate_limited_per_user(data_dir: Path) -> None:
    secret = _cli(data_dir, "app", "secret")
    server = ServerProcess.configured(
        data_dir, f'[storage]\ndata_dir = "{data_dir}"\n[media]\nuploads_per_minute = 3\n')
    server.start()
    try:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        auth = {"Authorization": f"Bearer {secret}"}
        conn.request("POST", "/v1/users", json.dumps({"address": "zed"}), auth)
        conn.getresponse().read()
        conn.request("POST", "/v1/users/zed/tokens", "{}", auth)
        token = json.loads(conn.getresponse().read())["token"]
        tus = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0",
               "Upload-Length": "0"}
        answers = []
        for _ in range(4):
            conn.request("POST", "/v1/uploads", headers=tus)
            response = conn.getresponse()
            response.read()
            answers.append((response.status, response.getheader("retry-after")))
        conn.close()
        assert answers[:3] == [(201, None)] * 3
        assert answers[3] == (429, "20")
    finally:
        server.stop()


def test_an_empty_tus_upload_is_complete_when_created(world: World) -> None:
    status, headers, _ = world.request("POST", "/v1/uploads", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": "0"})
    assert status == 201
    file_id = headers["location"].rpartition("/")[2]
    status, headers, body = world.request("GET", f"/v1/files/{file_id}")
    assert (status, headers["content-length"], body) == (200, "0", b"")


def test_a_backend_send_can_share_a_file_or_is_refused(world: World) -> None:
    doc = world.upload(b"from the backend")
    conn = http.client.HTTPConnection(world.server.host, world.server.port, timeout=30)
    auth = {"Authorization": f"Bearer {world.secret}"}
    sends = []
    for file_id in (doc["id"], "c" * 26):
        text = json.dumps({"files": [{"id": file_id}]})
        conn.request("POST", "/v1/messages", json.dumps(
            {"from": "alice", "to": "carol", "text": text, "flags": FILE | 0x3}), auth)
        response = conn.getresponse()
        sends.append((response.status, json.loads(response.read())))
    conn.close()
    assert sends[0][0] == 201, sends
    assert (sends[1][0], sends[1][1]["message_status"]) == (422, "INVALID_FILE")
    status, _, body = world.request("GET", f"/v1/files/{doc['id']}", user="carol")
    assert (status, body) == (200, b"from the backend")
