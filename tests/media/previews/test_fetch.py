"""The SSRF-safe fetcher against real hostile servers on 127.0.0.1.

The servers listen on 127.0.0.1, which `public_loopback_policy` declares
public (only that address: 127.0.0.2 stays loopback).  Names are answered by
`FakeResolver`, whose every question is recorded.
"""

from __future__ import annotations

import asyncio
import resource
import time
import tracemalloc
from pathlib import Path

import pytest

from appliance.errors import PreviewFetchError, PreviewRefusedError
from appliance.media.config import PreviewConfig
from appliance.media.previews.address import AddressPolicy
from appliance.media.previews.fetch import MAX_HEADER_BYTES, Fetcher, Image, Page
from appliance.media.previews.url import parse_url
from tests.media.previews.support import FakeResolver, config, public_loopback_policy, tls_pair
from tests.media.previews.webserver import (
    HEAD,
    Request,
    WebServer,
    endless,
    gzip_bomb,
    page,
    raw,
    redirect,
    response,
)
from tests.support.components import missing


def fetcher(cfg: PreviewConfig, resolver: FakeResolver | None = None,
            policy: AddressPolicy | None = None, **kw: object) -> Fetcher:
    return Fetcher(cfg, resolver=resolver or FakeResolver(),
                   policy=policy or public_loopback_policy(), **kw)  # type: ignore[arg-type]


async def get_page(server: WebServer, url: str, cfg: PreviewConfig | None = None,
                   resolver: FakeResolver | None = None) -> Page:
    return await fetcher(cfg or config(server.port), resolver).page(parse_url(url))


def test_a_name_is_resolved_once_and_the_checked_address_dialed() -> None:
    async def go() -> None:
        resolver = FakeResolver({"news.example": [["127.0.0.1"]]})
        async with WebServer({"/": page("<title>hi</title>")}) as server:
            got = await get_page(server, server.url(host="news.example"), resolver=resolver)
        assert got.body == b"<title>hi</title>"
        assert got.complete
        # Asked once, in the absolute form; the Host header carries the name.
        assert resolver.calls == [("news.example.", server.port)]
        assert server.requests[0].headers["host"] == f"news.example:{server.port}"
        assert server.requests[0].headers["user-agent"] == PreviewConfig().user_agent
    asyncio.run(go())


def test_dns_rebinding_gets_no_second_question() -> None:
    """Public (127.0.0.1 here) to the check, private to a second lookup that never happens."""
    async def go() -> None:
        resolver = FakeResolver({"rebind.example": [["127.0.0.1"], ["10.0.0.1"]]})
        async with WebServer({"/": page("<title>first answer</title>")}) as server:
            got = await get_page(server, server.url(host="rebind.example"), resolver=resolver)
            assert b"first answer" in got.body
            assert len(resolver.calls) == 1
            assert len(server.requests) == 1
            # The name now answers private: the next fetch asks again and is refused.
            with pytest.raises(PreviewRefusedError,
                               match=r"rebind\.example resolves to 10\.0\.0\.1 is a private"):
                await get_page(server, server.url(host="rebind.example"), resolver=resolver)
            assert len(server.requests) == 1
    asyncio.run(go())


def test_ipv6_literals_and_names() -> None:
    async def go() -> None:
        try:
            server = WebServer({"/": page("<title>six</title>")}, bind="::1")
            await server.__aenter__()
        except OSError as exc:
            missing(f"no IPv6 loopback here: {exc}")
        try:
            resolver = FakeResolver({"six.example": [["::1"]]})
            six = fetcher(config(server.port), resolver, AddressPolicy(["::1/128"]))
            for url in (f"http://[::1]:{server.port}/", f"http://six.example:{server.port}/"):
                assert b"six" in (await six.page(parse_url(url))).body
            assert server.requests[0].headers["host"] == f"[::1]:{server.port}"
        finally:
            await server.__aexit__(None, None, None)
    asyncio.run(go())


def test_a_refused_connection_falls_to_the_next_checked_address() -> None:
    async def go() -> None:
        # Nothing listens on 127.0.0.3 (the server binds 127.0.0.1 only).
        resolver = FakeResolver({"two.example": [["127.0.0.3", "127.0.0.1"]]})
        policy = public_loopback_policy("127.0.0.3/32")
        async with WebServer({"/": page("<title>second</title>")}) as server:
            got = await fetcher(config(server.port), resolver, policy).page(
                parse_url(server.url(host="two.example")))
        assert b"second" in got.body
    asyncio.run(go())


@pytest.mark.parametrize(("location", "reason"), [
    ("http://10.0.0.1/", "10.0.0.1 is a private address"),
    ("http://127.0.0.2/", "127.0.0.2 is a loopback address"),  # the policy allows .1 only
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://0x7f.2/", "127.0.0.2 is a loopback address"),
    ("http://intranet.example/", "intranet.example resolves to 192.168.1.10 is a private"),
    ("http://localhost/", "local name"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://127.0.0.1/", "scheme 'gopher'"),
    ("http://a@news.example/", "userinfo"),
    ("http://news.example:25/", "port 25 is not fetched"),
])
def test_each_redirect_is_checked_from_scratch(location: str, reason: str) -> None:
    async def go() -> None:
        resolver = FakeResolver({"intranet.example": [["192.168.1.10"]]})
        async with WebServer({"/": redirect(location)}) as server:
            with pytest.raises(PreviewRefusedError) as refused:
                await get_page(server, server.url(), resolver=resolver)
            assert len(server.requests) == 1
        assert reason in refused.value.reason
    asyncio.run(go())


def test_redirects_are_followed_within_the_limit_and_loops_refused() -> None:
    async def go() -> None:
        routes = {"/loop/a": redirect("/loop/b"), "/loop/b": redirect("/loop/a", 301),
                  "/done": page("<title>done</title>")}
        for hop in range(7):
            routes[f"/chain/{hop}"] = redirect(f"/chain/{hop + 1}", 307)
        routes["/chain/3"] = redirect("/done", 308)
        async with WebServer(routes) as server:
            got = await get_page(server, server.url("/chain/0"))
            assert str(got.url) == server.url("/done")
            with pytest.raises(PreviewFetchError, match="redirect loop"):
                await get_page(server, server.url("/loop/a"))
            routes["/chain/3"] = redirect("/chain/4", 307)
            server.requests.clear()
            with pytest.raises(PreviewFetchError, match=r"more than 5 redirects"):
                await get_page(server, server.url("/chain/0"))
            assert len(server.requests) == 6
    asyncio.run(go())


def test_a_body_without_end_stops_at_the_limit() -> None:
    async def go() -> None:
        async with WebServer({"/": endless(HEAD, b"<p>" + b"x" * 65533)}) as server:
            cfg = config(server.port, max_html_bytes=256 * 1024, timeout_s=3.0)
            started = time.monotonic()
            got = await fetcher(cfg).page(parse_url(server.url()))
            elapsed = time.monotonic() - started
        assert not got.complete
        assert len(got.body) == cfg.max_html_bytes
        assert elapsed < cfg.timeout_s
    asyncio.run(go())


def test_the_page_is_read_only_to_the_end_of_its_head() -> None:
    async def go() -> None:
        head = HEAD + b"Transfer-Encoding: chunked\r\n"
        start = b"<html><head><title>t</title></head><body>"
        chunk = b"%x\r\n%s\r\n" % (len(start), start)
        filler = b"%x\r\n%s\r\n" % (65536, b"y" * 65536)

        async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
            writer.write(head + b"\r\n" + chunk)
            while True:
                writer.write(filler)
                await writer.drain()

        async with WebServer({"/": handle}) as server:
            got = await get_page(server, server.url())
        assert got.complete
        assert got.body.startswith(start)
        assert len(got.body) < 200_000
    asyncio.run(go())


def test_a_gzip_bomb_costs_the_limit_not_its_expansion() -> None:
    bomb = gzip_bomb()
    assert len(bomb) < 1_100_000

    async def go() -> Page:
        head = HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n" % len(bomb)
        async with WebServer({"/": raw(head + b"\r\n" + bomb)}) as server:
            return await get_page(server, server.url(),
                                  config(server.port, max_html_bytes=1 << 20))

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        got = asyncio.run(go())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rss_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert not got.complete
    assert len(got.body) == 1 << 20
    assert peak < 16 << 20, f"peak {peak} bytes"  # the limit and some buffers, not 1 GiB
    assert rss_growth_kib < 64 * 1024, f"RSS grew {rss_growth_kib} KiB"


def test_slow_loris_headers_are_cut_at_the_timeout() -> None:
    async def one_byte_a_second(request: Request, writer: asyncio.StreamWriter) -> None:
        for byte in HEAD:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(1.0)  # the attack itself

    async def go() -> None:
        async with WebServer({"/": one_byte_a_second}) as server:
            started = time.monotonic()
            with pytest.raises(PreviewFetchError, match=r"within 1\.5 s"):
                await get_page(server, server.url(), config(server.port, timeout_s=1.5))
            assert time.monotonic() - started < 2.5
    asyncio.run(go())


@pytest.mark.parametrize("size", [80 * 1024, 300 * 1024, 4 << 20])
def test_a_huge_header_is_refused(size: int) -> None:
    async def go() -> None:
        big = HEAD + b"X-Big: " + b"a" * size + b"\r\n\r\n<title>x</title>"
        async with WebServer({"/": raw(big)}) as server:
            with pytest.raises(PreviewFetchError,
                               match=f"response header larger than {MAX_HEADER_BYTES}"):
                await get_page(server, server.url())
    asyncio.run(go())


@pytest.mark.parametrize(("answer", "reason"), [
    (response(404, b"gone"), "answered HTTP 404"),
    (response(500, b""), "answered HTTP 500"),
    (response(302, b""), "HTTP 302 without Location"),
    (response(200, b"{}", {"Content-Type": "application/json"}), "is not a web page"),
    (response(200, b"<title>x</title>"), "no content type is not a web page"),
    (response(200, b"x", {"Content-Type": "text/html", "Content-Encoding": "br"}),
     "content coding 'br' is not accepted"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/html\r\n\r\nshort",
     "broke HTTP/1.1"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "broke HTTP/1.1"),
])
def test_unusable_answers(answer: bytes, reason: str) -> None:
    async def go() -> None:
        async with WebServer({"/": raw(answer)}) as server:
            with pytest.raises(PreviewFetchError) as failed:
                await get_page(server, server.url())
        assert reason in failed.value.reason
    asyncio.run(go())


def test_proxies_from_the_environment_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://10.9.9.9:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    async def go() -> None:
        async with WebServer({"/": page("<title>direct</title>")}) as server:
            got = await get_page(server, server.url())
        assert b"direct" in got.body
    asyncio.run(go())


def test_https_verifies_the_name_while_dialing_the_checked_address(tmp_path: Path) -> None:
    async def go() -> None:
        server_tls, client_tls = tls_pair(tmp_path, ("secure.example",))
        resolver = FakeResolver({"secure.example": [["127.0.0.1"]],
                                 "other.example": [["127.0.0.1"]]})
        async with WebServer({"/": page("<title>over TLS</title>")}, tls=server_tls) as server:
            cfg = config(server.port)
            got = await fetcher(cfg, resolver, ssl_context=client_tls).page(
                parse_url(server.url(host="secure.example", scheme="https")))
            assert b"over TLS" in got.body
            assert server.requests[0].server_name == "secure.example"  # SNI: the name
            with pytest.raises(PreviewFetchError, match="CERTIFICATE_VERIFY_FAILED"):
                await fetcher(cfg, resolver, ssl_context=client_tls).page(
                    parse_url(server.url(host="other.example", scheme="https")))
    asyncio.run(go())


def test_an_image_is_downloaded_to_the_file(tmp_path: Path) -> None:
    async def go() -> Image:
        body = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 1000
        routes = {"/i.png": raw(response(200, body, {"Content-Type": "image/png"}))}
        async with WebServer(routes) as server:
            image = await fetcher(config(server.port)).image(parse_url(server.url("/i.png")),
                                                             tmp_path / "img")
        assert (tmp_path / "img").read_bytes() == body
        return image
    image = asyncio.run(go())
    assert (image.content_type, image.size) == ("image/png", 256_008)


@pytest.mark.parametrize(("answer", "reason"), [
    (response(200, b"<svg/>", {"Content-Type": "image/svg+xml"}), "not a raster image"),
    (response(200, b"<html>", {"Content-Type": "text/html"}), "not a raster image"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 99999999\r\n\r\n",
     "image larger than 524288 bytes"),
])
def test_unusable_images(answer: bytes, reason: str, tmp_path: Path) -> None:
    async def go() -> None:
        async with WebServer({"/": raw(answer)}) as server:
            with pytest.raises(PreviewFetchError) as failed:
                await fetcher(config(server.port)).image(parse_url(server.url()),
                                                         tmp_path / "img")
        assert reason in failed.value.reason
    asyncio.run(go())


@pytest.mark.parametrize("kind", ["endless", "bomb"])
def test_an_image_over_the_limit_is_refused(kind: str, tmp_path: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
    handler = endless(head, b"\x00" * 65536) if kind == "endless" else raw(
        head + b"Content-Encoding: gzip\r\n\r\n" + gzip_bomb())

    async def go() -> None:
        async with WebServer({"/": handler}) as server:
            with pytest.raises(PreviewFetchError, match="image larger than 524288 bytes"):
                await fetcher(config(server.port)).image(parse_url(server.url()),
                                                         tmp_path / "img")
        assert (tmp_path / "img").stat().st_size <= 524288
    asyncio.run(go())
