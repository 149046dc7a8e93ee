"""Files attacked end to end (issue 15): a real server, raw HTTP, the native protocol.

An attacker with an account in the app, one with an account in another app
(the same address there), and one with none: each test tries what they
would, and checks the answer *and* that nothing changed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import io
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from PIL import Image

from appliance.protocol.attachments import FILE
from appliance.protocol.wire import Message, Status, StatusReport
from tests.support.client import Client
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

MAX_FILE = 1024 * 1024
MAX_APP = 3 * MAX_FILE + MAX_FILE // 2
TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}


def _cli(data_dir: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


@dataclass
class World:
    server: ServerProcess
    secrets: dict[str, str]  # app -> secret
    tokens: dict[str, str]  # "alice" (app one) or "x-alice" (app two) -> access token

    def request(self, method: str, path: str, body: bytes | None = None, *,
                user: str | None = "alice", secret: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
        sent = dict(headers or {})
        if secret is not None:
            sent["Authorization"] = f"Bearer {self.secrets[secret]}"
        elif user is not None:
            sent["Authorization"] = f"Bearer {self.tokens[user]}"
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def admin(self, method: str, path: str, doc: Any = None, app: str = "one") -> Any:
        status, _, body = self.request(method, path, json.dumps(doc).encode() if doc else None,
                                       secret=app)
        assert status < 300, (status, body)
        return json.loads(body) if body else None

    def upload(self, data: bytes, *, user: str = "alice",
               content_type: str = "application/x-test") -> dict[str, Any]:
        status, _, body = self.request("POST", "/v1/files?name=f.bin", data, user=user,
                                       headers={"Content-Type": content_type})
        assert status == 201, body
        doc: dict[str, Any] = json.loads(body)
        return doc

    def create_upload(self, length: int, user: str = "alice") -> str:
        status, headers, body = self.request("POST", "/v1/uploads", user=user,
                                             headers={**TUS, "Upload-Length": str(length)})
        assert status == 201, body
        return headers["location"]

    def offset(self, upload: str, user: str = "alice") -> int:
        status, headers, _ = self.request("HEAD", upload, user=user, headers=TUS)
        assert status == 200
        return int(headers["upload-offset"])

    def send(self, user: str, message: Message) -> int:
        """The status of `message` sent by `user` (a copy of it to the sender, a group
        member too, is passed over)."""
        async def go() -> int:
            client = await Client.connect(self.server.host, self.server.port, self.tokens[user])
            try:
                client.send(message)
                while not isinstance(event := await client.next_event(), StatusReport):
                    pass
                return int(event.status)
            finally:
                await client.close()
        return asyncio.run(go())


@pytest.fixture
def world(data_dir: Path) -> Iterator[World]:
    secrets = {"one": _cli(data_dir, "app", "secret"),
               "two": _cli(data_dir, "app", "add", "two").splitlines()[-1].strip()}
    server = ServerProcess.configured(
        data_dir, f'[storage]\ndata_dir = "{data_dir}"\n'
        f"[media]\nmax_file_bytes = {MAX_FILE}\nmax_app_bytes = {MAX_APP}\n"
        "thumbnail_sizes = [96]\npicture_sizes = [64]\nuploads_per_minute = 600\n")
    server.start()
    try:
        world = World(server, secrets, {})
        for app, name in (("one", "alice"), ("one", "bob"), ("one", "carol"), ("two", "alice")):
            world.admin("POST", "/v1/users", {"address": name}, app)
            key = name if app == "one" else f"x-{name}"
            world.tokens[key] = world.admin("POST", f"/v1/users/{name}/tokens", {}, app)["token"]
        yield world
    finally:
        server.stop()
    assert "Traceback" not in server.output, server.output


def _photo(size: tuple[int, int] = (120, 80)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "navy").save(out, "JPEG")
    return out.getvalue()


def test_another_apps_user_reaches_nothing(world: World) -> None:
    """Same address, another app: every file route is a 404, never a 403 that would
    confirm the id; a FILE message naming the file is refused; an upload in progress
    is neither read, extended nor terminated."""
    doc = world.upload(b"app one only")
    photo = world.upload(_photo(), content_type="image/jpeg")
    upload = world.create_upload(10)
    path = f"/v1/files/{doc['id']}"
    for route in (path, f"{path}/meta", f"/v1/files/{photo['id']}/thumbnail?size=96"):
        assert world.request("GET", route, user="x-alice")[0] == 404, route
    assert world.request("POST", f"{path}/links", b"{}", user="x-alice")[0] == 404
    assert world.request("HEAD", upload, user="x-alice", headers=TUS)[0] == 404
    assert world.request("PATCH", upload, b"0123456789", user="x-alice",
                         headers={**PATCH, "Upload-Offset": "0"})[0] == 404
    assert world.request("DELETE", upload, user="x-alice", headers=TUS)[0] == 404
    assert world.offset(upload) == 0  # untouched
    payload = json.dumps({"files": [{"id": doc["id"]}]}).encode()
    assert world.send("x-alice", Message(1, b"alice", payload, flags=FILE)) \
        == Status.INVALID_FILE
    assert world.request("GET", path, user="x-alice")[0] == 404  # still nothing granted
    # Group ids are global: app one's group is no group at all in app two.
    group = world.admin("POST", "/v1/groups", {"name": "g", "members": ["alice"],
                                               "perms": "send,receive,admin"})["id"]
    assert world.request("PUT", f"/v1/groups/{group}/picture", _photo(),
                         headers={"Content-Type": "image/jpeg"})[0] == 200
    assert world.request("GET", f"/v1/groups/{group}/picture", user="x-alice")[0] == 404
    assert world.request("PUT", f"/v1/groups/{group}/picture", _photo(), user="x-alice",
                         headers={"Content-Type": "image/jpeg"})[0] == 404
    assert world.request("GET", "/v1/users/alice/picture", user="x-alice")[0] == 404


def test_group_access_follows_membership(world: World) -> None:
    """A file sent to a group is read by its members while they are members; a group
    picture likewise; a user outside the group cannot share into it or grant himself
    someone else's file by naming its id."""
    group = world.admin("POST", "/v1/groups", {"name": "g", "members": ["alice", "bob"],
                                               "perms": "send,receive,admin"})["id"]
    doc = world.upload(b"for the group")
    path = f"/v1/files/{doc['id']}"
    payload = json.dumps({"files": [{"id": doc["id"]}]}).encode()
    # carol (not a member) names alice's file to the group, then to herself.
    assert world.send("carol", Message(1, payload=payload, group_id=group, flags=FILE)) \
        == Status.NOT_MEMBER
    assert world.send("carol", Message(2, b"carol", payload, flags=FILE)) == Status.INVALID_FILE
    assert world.request("GET", path, user="carol")[0] == 403
    assert world.send("alice", Message(3, payload=payload, group_id=group, flags=FILE)) \
        == Status.SENT
    assert world.request("GET", path, user="bob")[0] == 200
    assert world.request("PUT", f"/v1/groups/{group}/picture", _photo(), user="bob",
                         headers={"Content-Type": "image/jpeg"})[0] == 200
    assert world.request("GET", f"/v1/groups/{group}/picture", user="alice")[0] == 200
    assert world.request("GET", f"/v1/groups/{group}/picture", user="carol")[0] == 403
    world.admin("POST", f"/v1/groups/{group}/members", {"remove": ["bob"]})
    assert world.request("GET", path, user="bob")[0] == 403  # left: no longer
    assert world.request("GET", f"/v1/groups/{group}/picture", user="bob")[0] == 403
    # bob may not re-share what he can no longer read.
    assert world.send("bob", Message(4, b"carol", payload, flags=FILE)) == Status.INVALID_FILE
    assert world.request("GET", path, user="carol")[0] == 403


def test_a_signed_link_opens_one_file(world: World) -> None:
    """A link's signature names its file: not another file, not another file's
    thumbnail; its exp cannot be moved, stretched or padded."""
    one = world.upload(_photo(), content_type="image/jpeg")
    two = world.upload(_photo((60, 90)), content_type="image/jpeg")
    query = one["url"].partition("?")[2]
    assert world.request("GET", f"/v1/files/{one['id']}/thumbnail?size=96&{query}",
                         user=None)[0] == 200
    for target in (f"/v1/files/{two['id']}?{query}",
                   f"/v1/files/{two['id']}/thumbnail?size=96&{query}"):
        assert world.request("GET", target, user=None)[0] == 403, target
    exp = query.split("&")[0].partition("=")[2]
    sig = query.split("&")[1].partition("=")[2]
    for bad in (f"exp={int(exp) + 1}&sig={sig}", f"exp={exp}0&sig={sig}",
                f"exp={'9' * 40}&sig={sig}", f"exp={exp}&sig={sig}=",
                f"exp={exp}&sig={sig.upper()}", f"exp=-{exp}&sig={sig}", f"sig={sig}",
                f"exp={exp}&sig={'A' * 10_000}"):
        assert world.request("GET", f"/v1/files/{one['id']}?{bad}", user=None)[0] == 403, bad


def test_tus_offsets_and_lengths_are_checked(world: World) -> None:
    """A PATCH past the declared length, bad numbers, a PATCH on someone else's
    upload or after its termination: refused, and the upload is as it was."""
    upload = world.create_upload(10)
    status, _, body = world.request("PATCH", upload, b"x" * 20,
                                    headers={**PATCH, "Upload-Offset": "0"})
    assert status == 413, body
    assert world.offset(upload) == 0
    for offset in ("-1", "1e3", "0x0", " ", "1" * 20, "0,0"):
        assert world.request("PATCH", upload, b"x", headers={**PATCH, "Upload-Offset": offset}
                             )[0] == 400, offset
    for length in ("-1", "1" * 20, "10.0", ""):
        assert world.request("POST", "/v1/uploads", headers={**TUS, "Upload-Length": length}
                             )[0] == 400, length
    assert world.request("POST", "/v1/uploads", headers={
        **TUS, "Upload-Length": str(MAX_FILE + 1)})[0] == 413
    big_name = base64.b64encode(b"n" * 10_000).decode()
    assert world.request("POST", "/v1/uploads", headers={
        **TUS, "Upload-Length": "1", "Upload-Metadata": f"filename {big_name}"})[0] == 400
    assert world.request("PATCH", upload, b"01234", user="bob",
                         headers={**PATCH, "Upload-Offset": "0"})[0] == 404
    assert world.request("DELETE", upload, user="bob", headers=TUS)[0] == 404
    assert world.offset(upload) == 0
    status, headers, _ = world.request("PATCH", upload, b"01234",
                                       headers={**PATCH, "Upload-Offset": "0"})
    assert (status, headers["upload-offset"]) == (204, "5")
    assert world.request("DELETE", upload, headers=TUS)[0] == 204
    assert world.request("PATCH", upload, b"56789",
                         headers={**PATCH, "Upload-Offset": "5"})[0] == 404
    assert world.request("HEAD", upload, headers=TUS)[0] == 404


def test_odd_ids_and_header_values(world: World) -> None:
    """Ids that are not ids, an escaped id, huge Range/If-Range/Content-Type values and
    a long name: clear answers, nothing served that should not be."""
    data = bytes(range(256)) * 4
    doc = world.upload(data)
    file_id = doc["id"]
    for bad in (file_id.upper(), f"{file_id}.", f"{file_id[:-1]}.", "." * 26, "%2e%2e",
                f"{file_id}%00", f"{file_id}%2Fmeta", "a" * 27):
        assert world.request("GET", f"/v1/files/{bad}")[0] == 404, bad
    escaped = "".join(f"%{ord(ch):02x}" for ch in file_id)
    assert world.request("GET", f"/v1/files/{escaped}")[2] == data
    for range_value, if_range in (("bytes=0-" + "9" * 10_000, None),
                                  ("bytes=" + "0-1," * 2000 + "0-1", None),
                                  ("bytes=0-1", '"' + "a" * 10_000 + '"')):
        headers = {"Range": range_value, **({"If-Range": if_range} if if_range else {})}
        status, _, body = world.request("GET", f"/v1/files/{file_id}", headers=headers)
        assert (status, body) == (200, data)
    odd = world.upload(b"x", content_type="text/" + "a" * 10_000)
    assert odd["type"] == "application/octet-stream"
    status, _, body = world.request("POST", f"/v1/files?name={quote('é' * 2000)}", b"y")
    assert status == 201, body
    assert len(json.loads(body)["name"].encode()) <= 255
    # Bytes that start like an image but are none: refused, nothing kept.
    assert world.request("POST", "/v1/files", b"GIF89a and then nothing",
                         headers={"Content-Type": "image/gif"})[0] == 422
    # Declared an image, is not one: stored as octet-stream, no thumbnail, never inline.
    fake = world.upload(b"<svg onload=alert(1)>", content_type="image/svg+xml")
    assert fake["type"] == "application/octet-stream"
    assert world.request("GET", f"/v1/files/{fake['id']}/thumbnail?size=96")[0] == 422
    status, headers, _ = world.request("GET", f"/v1/files/{fake['id']}")
    assert headers["content-disposition"].startswith("attachment")


def test_concurrent_uploads_never_pass_the_app_quota(world: World) -> None:
    """Sixteen creates at once, each of the largest size: exactly as many pass as fit."""
    answers: list[int] = []
    start = threading.Barrier(16)

    def create() -> None:
        start.wait()
        answers.append(world.request("POST", "/v1/uploads", headers={
            **TUS, "Upload-Length": str(MAX_FILE)})[0])

    threads = [threading.Thread(target=create) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [201] * (MAX_APP // MAX_FILE) + [413] * (16 - MAX_APP // MAX_FILE)


def test_a_deleted_users_token_stops_at_once(world: World) -> None:
    doc = world.upload(b"mine")
    assert world.request("GET", f"/v1/files/{doc['id']}")[0] == 200  # cached now
    world.admin("DELETE", "/v1/users/alice")
    assert world.request("GET", f"/v1/files/{doc['id']}")[0] == 401
    assert world.request("POST", "/v1/uploads", headers={**TUS, "Upload-Length": "1"}
                         )[0] == 401
    # What alice sent stays for its recipients; her file is nobody's now.
    assert hashlib.sha256(b"mine").hexdigest() == doc["sha256"]


def test_a_patch_that_says_no_length_and_sends_too_much(world: World) -> None:
    """Chunked (no Content-Length): the body's length is learnt only as it comes.
    Refused once past the upload's length; what was kept is what HEAD says, and the
    upload goes on from there."""
    data = bytes(range(256)) * 512  # 128 KiB
    upload = world.create_upload(len(data))
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece)
                      for piece in (data[i:i + 16384] for i in range(0, len(data), 16384)))
    with socket.create_connection((world.server.host, world.server.port)) as sock:
        sock.sendall(f"PATCH {upload} HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {world.tokens['alice']}\r\n"
                     "Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
                     "Upload-Offset: 0\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                     + chunks + b"5\r\nextra\r\n0\r\n\r\n")
        sock.settimeout(10)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 422"), answer
    offset = world.offset(upload)
    assert offset <= len(data)
    status, headers, _ = world.request("PATCH", upload, data[offset:],
                                       headers={**PATCH, "Upload-Offset": str(offset)})
    assert (status, headers["upload-offset"]) == (204, str(len(data)))
    status, _, body = world.request("GET", headers["location"])
    assert (status, body) == (200, data)


def test_a_duplicate_or_refused_message_grants_nothing(world: World) -> None:
    """A resend of a message id already stored is not stored again: a FILE payload that
    the first one did not have grants nothing.  A refused message grants nothing."""
    doc = world.upload(b"not for bob")
    path = f"/v1/files/{doc['id']}"
    payload = json.dumps({"files": [{"id": doc["id"]}]}).encode()
    assert world.send("alice", Message(5, b"bob", b"hello")) == Status.SENT
    world.send("alice", Message(5, b"bob", payload, flags=FILE))  # the same id: a duplicate
    assert world.request("GET", path, user="bob")[0] == 403
    # Refused: to nobody, and to a group alice is not in.
    assert world.send("alice", Message(6, b"nobody", payload, flags=FILE)) \
        == Status.INVALID_DEST
    group = world.admin("POST", "/v1/groups", {"name": "g", "members": ["bob"]})["id"]
    assert world.send("alice", Message(7, payload=payload, group_id=group, flags=FILE)) \
        == Status.NOT_MEMBER
    assert world.request("GET", path, user="bob")[0] == 403
