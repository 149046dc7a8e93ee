"""Files through the SDK (issue 15) against a real server process.

`send_file` to a user and to a group, downloads checked byte for byte,
progress, uploads and downloads resumed after a cut connection (a proxy on
127.0.0.1 cuts the first transfer after some bytes) and after the server was
killed and restarted, typed errors for quotas and access, TLS, and the
client's memory while it uploads 200 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.protocol.wire import Flag, Status
from appliance.sdk import (
    Backoff,
    Client,
    FileAccessDeniedError,
    FileCorruptError,
    FileInfo,
    Group,
    IncomingMessage,
    InvalidFileError,
    NoSuchFileError,
    QuotaExceededError,
    TooLargeError,
    TransferInterruptedError,
)
from appliance.sdk.files import FileTransfer
from tests.sdk.test_http import Stand
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
USERS = ["alice", "bob", "carol", "dave"]  # dave is not in the team
FAST = Backoff(base_s=0.05, cap_s=0.5, floor_s=0.01)


@dataclass
class World:
    server: ServerProcess
    tokens: dict[str, str]
    groups: dict[str, int]
    tmp: Path
    clients: list[Client] = field(default_factory=list)

    def client(self, user: str, *, port: int | None = None, **kwargs: object) -> Client:
        client = Client(self.server.host, port or self.server.port, self.tokens[user],
                        store=self.tmp / f"{user}-{len(self.clients)}.db", backoff=FAST,
                        **kwargs)  # type: ignore[arg-type]
        self.clients.append(client)
        return client

    async def online(self, user: str, **kwargs: object) -> Client:
        client = self.client(user, **kwargs)
        async with asyncio.timeout(20):
            await client.wait_online()
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


def _world(tmp_path: Path, *, max_file: int, max_app: int) -> Iterator[World]:
    data = tmp_path / "data"
    data.mkdir()
    tokens, groups = provision(data, USERS, {"team": USERS[:3]})
    server = ServerProcess.configured(
        data, f'[storage]\ndata_dir = "{data}"\n'
        f"[media]\nmax_file_bytes = {max_file}\nmax_app_bytes = {max_app}\n")
    server.start()
    try:
        yield World(server, tokens, groups, tmp_path)
    finally:
        server.stop()
    assert "Traceback" not in server.output, server.output


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from _world(tmp_path, max_file=64 * MIB, max_app=256 * MIB)


@pytest.fixture
def tight_world(tmp_path: Path) -> Iterator[World]:
    yield from _world(tmp_path, max_file=2 * MIB, max_app=3 * MIB)


@pytest.fixture
def roomy_world(tmp_path: Path) -> Iterator[World]:
    yield from _world(tmp_path, max_file=256 * MIB, max_app=512 * MIB)


def _write(path: Path, size: int, seed: int = 1) -> str:
    """A file of `size` pseudo-random bytes, written in blocks; returns its SHA-256."""
    digest = hashlib.sha256()
    block = hashlib.sha256(str(seed).encode()).digest() * 32768  # 1 MiB
    with open(path, "wb") as out:
        left, n = size, 0
        while left:
            chunk = (block[n % 251:] + block[:n % 251])[:min(left, MIB)]
            out.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
            n += 1
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _run(world: World, body: Callable[[], Awaitable[None]], timeout_s: float = 120) -> None:
    async def main() -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await body()
        finally:
            await world.close()
    asyncio.run(main())


async def _next_message(inbox: AsyncIterator[IncomingMessage]) -> IncomingMessage:
    async with asyncio.timeout(20):
        return await anext(inbox)


class Recorder:
    """A progress callback that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))

    def check(self, total: int) -> None:
        assert self.calls, "no progress reported"
        done = [d for d, _ in self.calls]
        assert done == sorted(done), "progress went backwards"
        assert self.calls[-1] == (total, total)
        assert all(t == total for _, t in self.calls)


# --- a network that fails ---------------------------------------------------------------


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to the server, and cuts one connection: the first on
    which the client sends `prefix` (a request line), `after` bytes later in direction
    `upstream` (client to server) or not (server to client)."""

    def __init__(self, target: tuple[str, int], prefix: bytes, after: int, *,
                 upstream: bool, at_cut: Callable[[], None] | None = None) -> None:
        self.target, self.prefix, self.after, self.upstream = target, prefix, after, upstream
        self.at_cut = at_cut  # runs just before the cut (e.g. kills the server)
        self.cuts = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._done: list[asyncio.Future[None]] = []

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.gather(*self._done)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        done = asyncio.get_running_loop().create_future()
        self._done.append(done)
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]
        left = [-1]  # bytes until the cut once armed

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       from_client: bool) -> None:
            while data := await src.read(65536):
                if from_client and left[0] < 0 and self.cuts == 0 and self.prefix in data:
                    self.cuts += 1
                    left[0] = self.after
                if left[0] >= 0 and from_client == self.upstream:
                    if len(data) >= left[0]:
                        dst.write(data[:left[0]])
                        await dst.drain()
                        if self.at_cut is not None:
                            self.at_cut()
                        raise ConnectionAbortedError("cut")
                    left[0] -= len(data)
                dst.write(data)
                await dst.drain()
            dst.write_eof()

        try:
            await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        except OSError:
            pass
        finally:
            for w in (writer, up_writer):
                w.transport.abort()
            done.set_result(None)


# --- the tests ----------------------------------------------------------------------------


def test_send_file_to_a_user_who_downloads_it(world: World) -> None:
    source = world.tmp / "report.bin"
    digest = _write(source, 5 * MIB)

    async def body() -> None:
        alice, bob = await world.online("alice"), await world.online("bob")
        inbox = bob.messages()
        sent = Recorder()
        message = await alice.send_file("bob", source, caption="the report", progress=sent)
        await message.sent()
        sent.check(5 * MIB)
        assert len(sent.calls) <= 60  # throttled: ~10 a second
        assert message.flags & Flag.FILE
        got = await _next_message(inbox)
        assert (got.sender, got.caption) == ("alice", "the report")
        (info,) = got.files
        assert (info.name, info.size, info.sha256, info.content_type) == (
            "report.bin", 5 * MIB, digest, "application/octet-stream")
        received = Recorder()
        path = await bob.download_file(info, world.tmp / "bob-copy.bin", progress=received)
        assert _sha256(path) == digest
        received.check(5 * MIB)
        assert not (world.tmp / "bob-copy.bin.part").exists()
        # Into a directory, under the file's name; by id as well.
        inbox_dir = world.tmp / "downloads"
        inbox_dir.mkdir()
        path = await bob.download_file(info.id, inbox_dir)
        assert path == inbox_dir / "report.bin"
        assert _sha256(path) == digest
        # carol was not sent it.
        carol = world.client("carol")
        with pytest.raises(FileAccessDeniedError) as denied:
            await carol.download_file(info, world.tmp / "carol.bin")
        assert denied.value.http_status == 403
        assert not (world.tmp / "carol.bin").exists()

    _run(world, body)


def test_group_send_file_reaches_members_only(world: World) -> None:
    source = world.tmp / "plan.txt"
    source.write_bytes(b"the team's plan\n" * 1000)

    async def body() -> None:
        alice, carol = await world.online("alice"), await world.online("carol")
        inbox = carol.messages()
        message = await alice.send_file(Group(world.groups["team"]), source)
        await message.sent()
        got = await _next_message(inbox)
        (info,) = got.files
        assert (info.content_type, got.caption) == ("text/plain", None)
        path = await carol.download_file(info, world.tmp / "carol-plan.txt")
        assert path.read_bytes() == source.read_bytes()
        bob = world.client("bob")
        assert (await bob.download_file(info.id, world.tmp / "b.txt")).read_bytes() == \
            source.read_bytes()
        dave = world.client("dave")
        with pytest.raises(FileAccessDeniedError):
            await dave.download_file(info.id, world.tmp / "dave.txt")
        with pytest.raises(FileAccessDeniedError):
            await dave.file_link(info.id)

    _run(world, body)


def test_a_file_the_sender_may_not_share_is_refused(world: World) -> None:
    source = world.tmp / "mine.txt"
    source.write_bytes(b"alice's")

    async def body() -> None:
        alice, bob = await world.online("alice"), await world.online("bob")
        info = await alice.upload_file(source)
        # bob was never sent it: he cannot pass it on.
        payload = json.dumps({"files": [info.to_json()]}).encode()
        message = bob.send("carol", payload, flags=Flag.DEFAULT | Flag.FILE)
        with pytest.raises(InvalidFileError):
            await message.sent()
        assert message.status == Status.INVALID_FILE

    _run(world, body)


def test_links_and_metadata(world: World) -> None:
    source = world.tmp / "notes.md"
    source.write_bytes(b"# notes\n")

    async def body() -> None:
        alice = world.client("alice")
        info = await alice.upload_file(source, name="../../etc/notes.md")
        assert info.name == "notes.md"  # the server keeps no directory
        assert info.content_type == "text/markdown"
        url = await alice.file_link(info.id, ttl_s=60)
        assert url.startswith(f"http://{world.server.host}:{world.server.port}/v1/files/"
                              f"{info.id}?")
        loop = asyncio.get_running_loop()
        import urllib.request
        body = await loop.run_in_executor(None, lambda: urllib.request.urlopen(url).read())
        assert body == b"# notes\n"
        online = await world.online("alice")
        with pytest.raises(TooLargeError):  # checked before a byte is uploaded
            await online.send_file("bob", source, caption="x" * 70_000)
        with pytest.raises(NoSuchFileError):
            await alice.download_file("a" * 26, world.tmp / "none")
        with pytest.raises(NoSuchFileError):
            await alice.download_file("../../etc/passwd", world.tmp / "none")

    _run(world, body)


def test_upload_resumes_after_a_cut_connection(world: World) -> None:
    source = world.tmp / "big.bin"
    digest = _write(source, 9 * MIB + 123, seed=2)

    async def body() -> None:
        target = (world.server.host, world.server.port)
        async with CuttingProxy(target, b"PATCH", 5 * MIB + 777, upstream=True) as proxy:
            alice = world.client("alice", port=proxy.port)
            progress = Recorder()
            info = await alice.upload_file(source, progress=progress)
            assert proxy.cuts == 1
        assert (info.size, info.sha256) == (9 * MIB + 123, digest)
        progress.check(9 * MIB + 123)
        direct = world.client("alice")
        downloaded = await direct.download_file(info, world.tmp / "check.bin")
        assert _sha256(downloaded) == digest

    _run(world, body)


def test_download_resumes_after_a_cut_connection(world: World) -> None:
    source = world.tmp / "movie.bin"
    digest = _write(source, 7 * MIB, seed=3)

    async def body() -> None:
        alice = world.client("alice")
        info = await alice.upload_file(source)
        target = (world.server.host, world.server.port)
        async with CuttingProxy(target, b"GET /v1/files/", 3 * MIB, upstream=False) as proxy:
            via = world.client("alice", port=proxy.port)
            progress = Recorder()
            path = await via.download_file(info, world.tmp / "movie-copy.bin", progress=progress)
            assert proxy.cuts == 1
        assert _sha256(path) == digest
        progress.check(7 * MIB)

    _run(world, body)


def test_upload_resumes_after_the_server_restarts(world: World) -> None:
    source = world.tmp / "long.bin"
    digest = _write(source, 12 * MIB, seed=4)
    port = world.server.port

    def restart() -> None:  # SIGKILL mid-PATCH: no goodbye, nothing flushed by the server
        world.server.kill()
        world.server.start(port=port)

    async def body() -> None:
        target = (world.server.host, port)
        async with CuttingProxy(target, b"PATCH", 6 * MIB, upstream=True,
                                at_cut=restart) as proxy:
            alice = world.client("alice", port=proxy.port)
            info = await alice.upload_file(source)
            assert proxy.cuts == 1
        assert (info.size, info.sha256) == (12 * MIB, digest)

    _run(world, body)


def test_quotas_surface_as_typed_errors(tight_world: World) -> None:
    world = tight_world
    big, small = world.tmp / "big.bin", world.tmp / "small.bin"
    _write(big, 2 * MIB + 1)
    _write(small, 2 * MIB)

    async def body() -> None:
        alice = await world.online("alice")
        with pytest.raises(QuotaExceededError) as too_big:
            await alice.upload_file(big)
        assert (too_big.value.http_status, too_big.value.limit, too_big.value.allowed) == (
            413, "media.max_file_bytes", 2 * MIB)
        await alice.upload_file(small)
        with pytest.raises(QuotaExceededError) as full:
            await alice.send_file("bob", small)
        assert (full.value.limit, full.value.allowed) == ("media.max_app_bytes", 3 * MIB)

    _run(world, body)


def test_send_file_over_tls(world: World) -> None:
    source = world.tmp / "secret.bin"
    digest = _write(source, 2 * MIB + 5, seed=5)
    context = ssl.create_default_context(
        cafile=str(world.tmp / "data" / "tls" / "self-signed.crt"))

    async def body() -> None:
        alice = await world.online("alice", ssl=context)
        bob = await world.online("bob", ssl=context)
        inbox = bob.messages()
        await (await alice.send_file("bob", source)).sent()
        (info,) = (await _next_message(inbox)).files
        path = await bob.download_file(info, world.tmp / "secret-copy.bin")
        assert _sha256(path) == digest
        url = await bob.file_link(info.id)
        assert url.startswith(f"https://{world.server.host}:{world.server.port}/v1/files/")

    _run(world, body, timeout_s=30)  # each stalled download waits 60 s: fail sooner


def test_a_server_that_is_gone_is_a_typed_error(world: World) -> None:
    source = world.tmp / "x.bin"
    source.write_bytes(b"x")

    async def body() -> None:
        alice = world.client("alice")
        world.server.stop()
        with pytest.raises(TransferInterruptedError):
            await alice.upload_file(source)

    _run(world, body)


def _rss_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} in /proc/self/status")


def test_200_mib_up_and_down_keeps_memory_flat(roomy_world: World) -> None:
    world = roomy_world
    source, warm = world.tmp / "huge.bin", world.tmp / "warm.bin"
    digest = _write(source, 200 * MIB, seed=6)
    _write(warm, 5 * MIB, seed=7)
    uploaded: list[FileInfo] = []

    async def upload(path: Path) -> None:
        uploaded.append(await world.client("alice").upload_file(path))

    async def download() -> None:
        await world.client("alice").download_file(uploaded[-1], world.tmp / "huge-copy.bin")

    _run(world, lambda: upload(warm))  # imports, threads, buffers: before the baseline
    baseline = _rss_kib("VmRSS")
    with contextlib.suppress(OSError):  # the peak starts again from here (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    _run(world, lambda: upload(source))
    up_peak = _rss_kib("VmHWM")
    _run(world, download)
    down_peak = _rss_kib("VmHWM")
    assert uploaded[-1].sha256 == digest
    assert _sha256(world.tmp / "huge-copy.bin") == digest
    assert up_peak - baseline < 32 * 1024, f"RSS grew {up_peak - baseline} KiB uploading"
    assert down_peak - baseline < 32 * 1024, f"RSS grew {down_peak - baseline} KiB downloading"
    print(f"RSS growth: upload {up_peak - baseline} KiB, download {down_peak - baseline} KiB")


def _photo(path: Path) -> None:
    from PIL import Image  # the test makes a real JPEG; the SDK never needs Pillow

    Image.new("RGB", (64, 48), "navy").save(path, "JPEG")


def test_the_readme_files_example_runs(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = Path(__file__).resolve().parents[2] / "packaging" / "sdk" / "README.md"
    section = readme.read_text().split("## Files", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "no python example in the SDK README's Files section"
    monkeypatch.chdir(world.tmp)
    _photo(world.tmp / "photo.jpg")
    (world.tmp / "plan.pdf").write_bytes(b"%PDF-1.4 a plan")
    shown: list[tuple[object, ...]] = []
    got_both = asyncio.Event()

    def record(*args: object) -> None:  # the example's print
        shown.append(args)
        if sum(isinstance(a[-1], Path) for a in shown) == 2:
            got_both.set()

    namespace: dict[str, object] = {"print": record}
    # The wheel's `tidings` is this checkout's appliance.sdk renamed by stage.py (only
    # import lines differ: tests/packaging/test_sdk_stage.py); in this process it is the
    # latter that the world's clients are made of.
    assert code[1].count("from tidings import ") == 1
    example = code[1].replace("from tidings import ", "from appliance.sdk import ")
    exec(example.replace("Group(42)", f"Group({world.groups['team']})"), namespace)

    async def body() -> None:
        alice, bob = await world.online("alice"), await world.online("bob")
        async with asyncio.TaskGroup() as tasks:
            receiving = tasks.create_task(namespace["receive"](bob))  # type: ignore[operator]
            await namespace["share"](alice)  # type: ignore[operator]
            async with asyncio.timeout(30):
                await got_both.wait()
            receiving.cancel()  # receive() reads messages for ever

    _run(world, body)
    downloads = world.tmp / "downloads"
    assert sorted(p.name for p in downloads.iterdir()) == ["photo.jpg", "plan.pdf"]
    assert (downloads / "plan.pdf").read_bytes() == b"%PDF-1.4 a plan"
    assert ("the view", Path("downloads/photo.jpg")) in shown
    assert any(len(a) == 1 and re.fullmatch(r"\d+/\d+", str(a[0])) for a in shown)  # progress


def test_a_server_that_sends_other_bytes_leaves_nothing(tmp_path: Path) -> None:
    """The attack: a server (or a proxy in the middle) serves bytes that are not the
    file's.  The download fails as corrupt and keeps neither the file nor its part."""
    claimed = hashlib.sha256(b"the real file").hexdigest()

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 13\r\nETag: "%s"\r\n\r\n'
                     b"the fake file" % claimed.encode())
        await writer.drain()

    async def run() -> None:
        async with Stand(liar) as endpoint:
            transfer = FileTransfer(endpoint, FAST)
            for file in ("a" * 26, FileInfo("a" * 26, "f", "text/plain", 13, claimed)):
                with pytest.raises(FileCorruptError):
                    await transfer.download(file, tmp_path / "f.txt")
                left.append(sorted(os.listdir(tmp_path)))
            transfer.close()

    left: list[list[str]] = []
    asyncio.run(run())
    assert left == [[], []]
