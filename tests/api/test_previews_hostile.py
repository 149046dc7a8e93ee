"""``GET /v1/previews`` attacked through a real server (session 18 attack review).

A user of one app points the server at pages it serves itself (a local web server the
operator allows, the Internet's stand-in); an honest pair of another app messages, and
another of its users downloads a file, while the attack runs.
"""

from __future__ import annotations

import asyncio
import http.client
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import pytest

from appliance.media.previews.service import MAX_APP_FETCHES
from tests.support.hostile import HONEST_APP, HONEST_USERS, HonestPair, RssWatch
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

ATTACKER = "mallory"
#: What a page may be (`media.previews.max_html_bytes`, the default).
PAGE_BYTES = 1024 * 1024
#: An honest download of a small file, while the attack runs, takes at most this.
HONEST_DOWNLOAD_S = 1.0
#: The honest pair and the downloads go on at least this long (enough rounds to judge).
ATTACK_S = 1.0
#: `media.previews.timeout_s`: how long a page that never answers holds a turn.
FETCH_TIMEOUT_S = 2.0
#: An honest preview of a page that answers at once, while the attack runs.
HONEST_PREVIEW_S = 1.0

Route = Callable[[str], tuple[int, dict[str, str], bytes]]


class _Site(http.server.BaseHTTPRequestHandler):
    """Answers from `routes` (path prefix -> handler); HTTP/1.0, closes after each answer."""

    routes: ClassVar[dict[str, Route]] = {}

    def do_GET(self) -> None:
        for prefix, route in self.routes.items():
            if self.path.startswith(prefix):
                status, headers, body = route(self.path)
                break
        else:
            status, headers, body = 404, {}, b""
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class World:
    server: ServerProcess
    site: int  # the web server's port
    tokens: dict[str, str]  # the attacker's and the honest users'

    def request(self, method: str, path: str, user: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 10.0
                ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={
                "Authorization": f"Bearer {self.tokens[user]}", **(headers or {})})
            response = conn.getresponse()
            body = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        finally:
            conn.close()

    def preview(self, path: str, user: str = ATTACKER, timeout: float = 10.0
                ) -> tuple[int, dict[str, str], Any]:
        url = quote(f"http://127.0.0.1:{self.site}{path}", safe="")
        status, headers, body = self.request("GET", f"/v1/previews?url={url}", user,
                                             timeout=timeout)
        return status, headers, json.loads(body)


@pytest.fixture
def world(data_dir: Path) -> Iterator[World]:
    honest, _ = provision(data_dir, HONEST_USERS, app=HONEST_APP)
    attacker, _ = provision(data_dir, [ATTACKER])
    _Site.routes = {}
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    server = ServerProcess.configured(
        data_dir, f'[storage]\ndata_dir = "{data_dir}"\n'
        f'[media.previews]\nallow = ["127.0.0.1/32"]\nports = [{site.server_address[1]}]\n'
        f"timeout_s = {FETCH_TIMEOUT_S}\n")
    server.start()
    try:
        yield World(server, site.server_address[1], {**honest, **attacker})
    finally:
        server.stop()
        site.shutdown()
        site.server_close()
    assert "Traceback" not in server.output, server.output


def _timed_downloads(world: World, path: str, previews: list[Future[Any]]) -> list[float]:
    """Seconds each download of `path` by an honest user took (inf: none), one after the
    other while the previews are under way and for `ATTACK_S` at least."""
    took = []
    end = time.monotonic() + ATTACK_S
    while time.monotonic() < end or not all(p.done() for p in previews):
        started = time.perf_counter()
        try:
            status, _, _ = world.request("GET", path, HONEST_USERS[0],
                                         timeout=HONEST_DOWNLOAD_S * 3)
        except TimeoutError:
            status = 0
        took.append(time.perf_counter() - started if status == 200 else float("inf"))
    return took


def test_a_page_in_a_charset_no_browser_knows_holds_no_thread(world: World) -> None:
    """Measured before the fix: Python's codec registry answered ``charset=punycode``,
    whose decoder is quadratic: a 1 MiB page held a thread of the server's default
    executor for minutes.  Eleven such previews (punycode, idna, undefined, utf-32)
    took all six of its threads (2 cores): none was answered within 10 s, 3 of 4
    honest downloads of another app timed out (3 s), and the honest pair's p99 was
    1,049-1,126 ms (19 rounds in 13 s: the decoders hold the GIL too); ``idna`` and
    ``undefined`` raise out of the decoder (a 500 with a traceback).  Now only the
    WHATWG encodings are honoured: eleven 200s, downloads <= 31 ms, p99 16-23 ms,
    RSS +17-23 MiB."""
    pathological = b"<title>x</title>-" + b"a" * (PAGE_BYTES - 32)
    charsets = {"/puny": "punycode", "/idna": "idna", "/undefined": "undefined",
                "/utf32": "utf-32"}
    def page(charset: str) -> Route:
        return lambda path: (200, {"Content-Type": f"text/html; charset={charset}"},
                             pathological)

    for prefix, charset in charsets.items():
        _Site.routes[prefix] = page(charset)
    status, _, body = world.request("POST", "/v1/files?name=a.bin", HONEST_USERS[0],
                                    b"x" * 1000)
    assert status == 201, body
    download = f"/v1/files/{json.loads(body)['id']}"
    paths = [f"/puny/{n}" for n in range(8)] + ["/idna", "/undefined", "/utf32"]

    async def attack() -> tuple[list[Any], list[float], HonestPair]:
        loop = asyncio.get_running_loop()
        # As many at once as an app may have under way (`MAX_APP_FETCHES`).
        with ThreadPoolExecutor(MAX_APP_FETCHES) as pool:
            async with HonestPair(world.server, world.tokens) as honest:
                previews = [pool.submit(world.preview, p) for p in paths]
                took = await loop.run_in_executor(None, _timed_downloads, world, download,
                                                  previews)
        return [p.exception() or p.result() for p in previews], took, honest

    with RssWatch(world.server.proc.pid) as rss:  # type: ignore[union-attr]
        answers, took, honest = asyncio.run(attack())
    assert all(not isinstance(a, BaseException) and a[0] == 200 and a[2]["title"] == "x"
               for a in answers), answers
    assert max(took) < HONEST_DOWNLOAD_S, took
    honest.assert_healthy()
    assert rss.growth < 64 * 1024 * 1024, rss


def test_one_apps_slow_pages_leave_other_apps_their_turns(world: World) -> None:
    """Measured before the fix: the server fetches 16 previews at once, whoever asks.
    One user's burst of 24 links to pages that never answer took all 16 turns for
    ``timeout_s`` (2 s here, 5 s by default, twice with an image) and queued the rest:
    an honest user of another app waited 2.00 s for the preview of a page that answers
    at once (a handful of users of one app keep it so).  Now an app has at most
    `MAX_APP_FETCHES` (4) under way or waiting; more are refused at once (429,
    Retry-After), and the honest preview takes 3 ms."""
    arrived = threading.Semaphore(0)
    release = threading.Event()

    def tarpit(path: str) -> tuple[int, dict[str, str], bytes]:
        arrived.release()
        release.wait(10)  # past the server's timeout: it gives up first
        return 200, {"Content-Type": "text/html"}, b"<title>late</title>"

    _Site.routes["/slow"] = tarpit
    _Site.routes["/quick"] = lambda path: (200, {"Content-Type": "text/html"},
                                           b"<title>quick</title>")
    attack = 24
    with ThreadPoolExecutor(attack) as pool:
        try:
            answers = [pool.submit(world.preview, f"/slow/{n}") for n in range(attack)]
            # Every request of the burst has been taken: its fetch reached the page, or
            # it was refused; or the server's 16 turns are all taken.
            deadline = time.monotonic() + 5
            held = 0
            while held + sum(a.done() for a in answers) < attack and held < 16:
                assert time.monotonic() < deadline, (held, answers)
                held += arrived.acquire(timeout=0.05)
            started = time.perf_counter()
            status, _, doc = world.preview("/quick", HONEST_USERS[0])
            took = time.perf_counter() - started
        finally:
            release.set()
        results = [a.result() for a in answers]
    assert (status, doc["title"]) == (200, "quick")
    assert took < HONEST_PREVIEW_S, f"the honest preview took {took:.2f} s"
    refused = [r for r in results if r[0] == 429]
    assert len(refused) == attack - MAX_APP_FETCHES, [r[0] for r in results]
    assert {r[1]["retry-after"] for r in refused} == {f"{FETCH_TIMEOUT_S:.0f}"}
    assert {r[0] for r in results} <= {429, 200, 502}  # the held ones: late, or cut
