"""PreviewService: the issue's SSRF cases, real previews of local pages, cache, single flight,
the per-user rate limit."""

from __future__ import annotations

import asyncio
import gzip
import io
from pathlib import Path

import pytest
from PIL import Image as PilImage

from appliance.errors import (
    ImageRefusedError,
    PreviewFetchError,
    PreviewRefusedError,
    TooManyRequestsError,
)
from appliance.media.config import PreviewConfig
from appliance.media.previews.address import AddressPolicy
from appliance.media.previews.service import MAX_APP_FETCHES, Preview, PreviewService
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

APP, USER = 7, 42


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Images:
    """The lead's store_image stand-in: records what it was handed, returns a file id."""

    def __init__(self) -> None:
        self.stored: list[tuple[int, bytes, str]] = []
        self.paths: list[Path] = []

    async def __call__(self, app_id: int, path: Path, content_type: str) -> str | None:
        self.stored.append((app_id, await asyncio.to_thread(path.read_bytes), content_type))
        self.paths.append(path)
        return f"{len(self.stored):026d}".replace("0", "a")


def service(cfg: PreviewConfig, resolver: FakeResolver | None = None,
            policy: AddressPolicy | None = None, **kw: object) -> PreviewService:
    return PreviewService(cfg, resolver=resolver or FakeResolver(),
                          policy=policy or public_loopback_policy(), **kw)  # type: ignore[arg-type]


def png() -> bytes:
    out = io.BytesIO()
    PilImage.new("RGB", (40, 20), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


# -- the SSRF cases, each refused with its reason --------------------------------

@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://localhost/", "'localhost' is a local name"),
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://0.0.0.0/", "0.0.0.0 is the unspecified address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
    ("http://[fd00:ec2::254]/", "fd00:ec2::254 is a cloud metadata address"),
    ("http://100.100.100.200/", "100.100.100.200 is a cloud metadata address"),
    ("http://10.0.0.1/", "10.0.0.1 is a private address (RFC 1918)"),
    ("http://100.64.1.1/", "carrier-grade NAT"),
    ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1 is an IPv4-mapped address reaching 127.0.0.1"),
    ("http://2130706433/", "127.0.0.1 is a loopback address"),
    ("http://0177.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://0x7f.1/", "127.0.0.1 is a loopback address"),
    ("http://[64:ff9b::7f00:1]/", "NAT64 address (RFC 6052) reaching 127.0.0.1"),
    ("http://[2002:a00:1::1]/", "6to4 address (RFC 3056) reaching 10.0.0.1"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
    ("http://private.example/", "private.example resolves to 10.20.30.40 is a private"),
    ("http://mixed.example/", "mixed.example resolves to 192.168.0.1 is a private"),
    ("http://printer.local/", "local name (.local)"),
    ("file:///etc/passwd", "scheme 'file' is not fetched"),
    ("gopher://example.com/_SET%20x", "scheme 'gopher' is not fetched"),
    ("ftp://example.com/", "scheme 'ftp' is not fetched"),
    ("http://example.com:8080/", "port 8080 is not fetched"),
    ("http://a@127.0.0.1/", "userinfo is refused"),
])
def test_ssrf_refused(url: str, reason: str) -> None:
    resolver = FakeResolver({"private.example": [["10.20.30.40"]],
                             "mixed.example": [["93.184.215.14", "192.168.0.1"]],
                             "example.com": [["93.184.215.14"]]})

    async def go() -> None:
        with pytest.raises(PreviewRefusedError) as refused:
            await PreviewService(PreviewConfig(), resolver=resolver).preview(APP, USER, url)
        assert reason in refused.value.reason
    asyncio.run(go())


@pytest.mark.parametrize("hostile", ["endless", "bomb"])
def test_a_page_without_a_head_within_the_limit_is_refused(hostile: str) -> None:
    handler = endless(HEAD, b"x" * 65536) if hostile == "endless" else raw(
        HEAD + b"Content-Encoding: gzip\r\n\r\n" + gzip_bomb())

    async def go() -> None:
        async with WebServer({"/": handler}) as server:
            with pytest.raises(PreviewFetchError, match="no page head within 262144 bytes"):
                await service(config(server.port)).preview(APP, USER, server.url())
    asyncio.run(go())


def test_a_redirect_to_a_private_address_is_refused() -> None:
    async def go() -> None:
        async with WebServer({"/": redirect("http://10.0.0.1/admin")}) as server:
            with pytest.raises(PreviewRefusedError, match=r"10\.0\.0\.1 is a private address"):
                await service(config(server.port)).preview(APP, USER, server.url())
    asyncio.run(go())


# -- real previews of local pages --------------------------------------------------------

def test_opengraph_preview_with_its_image_stored_as_a_file() -> None:
    image = png()
    html = """<html><head><title>plain</title>
        <meta property="og:title" content="A &quot;story&quot;">
        <meta property="og:description" content="What happened.">
        <meta property="og:site_name" content="Local News">
        <meta property="og:image" content="/media/cover.png">
        <link rel="canonical" href="/story">
        </head><body>...</body></html>"""
    images = Images()

    async def go() -> Preview:
        routes = {"/story?utm=1": page(html), "/story": page(html),
                  "/media/cover.png": raw(response(200, image, {"Content-Type": "image/png"}))}
        async with WebServer(routes) as server:
            resolver = FakeResolver({"news.example": [["127.0.0.1"]]})
            got = await service(config(server.port), resolver, store_image=images).preview(
                APP, USER, server.url("/story?utm=1#top", host="News.Example"))
            base = server.url(host="news.example").rstrip("/")
            assert got == Preview(
                url=f"{base}/story?utm=1", canonical_url=f"{base}/story",
                title='A "story"', description="What happened.", site_name="Local News",
                image_url=f"{base}/media/cover.png", image_file_id="a" * 25 + "1")
            return got
    asyncio.run(go())
    assert images.stored == [(APP, image, "image/png")]
    assert not images.paths[0].exists()  # the temporary file is gone


def test_twitter_card_and_plain_title_previews() -> None:
    card = """<head><meta name="twitter:card" content="summary">
        <meta name="twitter:title" content="Card title">
        <meta name="twitter:description" content="Card text"></head>"""

    async def go() -> None:
        async with WebServer({"/card": page(card), "/plain": page(
                "<title> Just a page </title><meta name=description content='Words.'>")
                }) as server:
            svc = service(config(server.port))
            got = await svc.preview(APP, USER, server.url("/card"))
            assert (got.title, got.description, got.image_file_id) == (
                "Card title", "Card text", None)
            got = await svc.preview(APP, USER, server.url("/plain"))
            assert (got.title, got.description, got.site_name) == ("Just a page", "Words.", None)
            assert got.canonical_url == server.url("/plain")
    asyncio.run(go())


def test_legacy_charsets_from_meta_and_header() -> None:
    cp1251 = '<meta charset="windows-1251"><title>Новости дня</title>'.encode("cp1251")
    latin = "<title>Caf\xe9 cr\xe8me</title>".encode("latin-1")
    gzipped = gzip.compress("<title>Komprimiert: äöü</title>".encode())

    async def go() -> None:
        async with WebServer({
            "/ru": page(cp1251, "text/html"),
            "/fr": page(latin, "text/html; charset=ISO-8859-1"),
            "/gz": raw(HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
                       % (len(gzipped), gzipped)),
        }) as server:
            svc = service(config(server.port))
            assert (await svc.preview(APP, USER, server.url("/ru"))).title == "Новости дня"
            assert (await svc.preview(APP, USER, server.url("/fr"))).title == "Café crème"
            assert (await svc.preview(APP, USER, server.url("/gz"))).title == \
                "Komprimiert: äöü"
    asyncio.run(go())


def test_https_preview_with_a_test_ca(tmp_path: Path) -> None:
    async def go() -> None:
        server_tls, client_tls = tls_pair(tmp_path, ("secure.example",))
        async with WebServer({"/": page("<title>Secure</title>")}, tls=server_tls) as server:
            resolver = FakeResolver({"secure.example": [["127.0.0.1"]]})
            got = await service(config(server.port), resolver, ssl_context=client_tls).preview(
                APP, USER, server.url(host="secure.example", scheme="https"))
        assert got.title == "Secure"
        assert server.requests[0].server_name == "secure.example"
    asyncio.run(go())


def test_an_allowlisted_internal_host_is_fetched() -> None:
    """The default policy (no test policy): only the operator's allow list lets these through."""
    async def go() -> None:
        async with WebServer({"/": page("<title>Internal wiki</title>")}) as server:
            resolver = FakeResolver({"wiki.corp": [["127.0.0.1"]]})
            by_name = PreviewService(config(server.port, allow=("wiki.corp",)), resolver=resolver)
            got = await by_name.preview(APP, USER, server.url(host="wiki.corp"))
            assert got.title == "Internal wiki"
            assert resolver.calls == [("wiki.corp", server.port)]  # as given: /etc/hosts works
            by_cidr = PreviewService(config(server.port, allow=("127.0.0.0/30",)))
            assert (await by_cidr.preview(APP, USER, server.url())).title == "Internal wiki"
            unlisted = PreviewService(config(server.port), resolver=resolver)
            with pytest.raises(PreviewRefusedError, match="local name"):
                await unlisted.preview(APP, USER, server.url(host="wiki.corp"))
            with pytest.raises(PreviewRefusedError, match="loopback"):
                await unlisted.preview(APP, USER, server.url())
        assert len(server.requests) == 2
    asyncio.run(go())


def test_a_failed_image_leaves_the_preview_without_one() -> None:
    html = '<title>t</title><meta property="og:image" content="/{}">'

    async def refuse(app_id: int, path: Path, content_type: str) -> str | None:
        raise ImageRefusedError("not an image Pillow opens")

    async def go() -> None:
        async with WebServer({"/missing": page(html.format("nope.png")),
                              "/private": page(html.format("http://10.0.0.1/x.png")),
                              "/bad": page(html.format("bad.png")),
                              "/bad.png": raw(response(200, b"junk",
                                                       {"Content-Type": "image/png"}))},
                             ) as server:
            images = Images()
            svc = service(config(server.port), store_image=images)
            for path in ("/missing", "/private"):
                got = await svc.preview(APP, USER, server.url(path))
                assert got.title == "t"
                assert got.image_url is not None
                assert got.image_file_id is None
            assert images.stored == []
            got = await service(config(server.port), store_image=refuse).preview(
                APP, USER, server.url("/bad"))
            assert got.image_file_id is None
    asyncio.run(go())


# -- cache, single flight, apps, rate limit ----------------------------------------------

def test_successes_and_failures_are_cached_for_their_ttls() -> None:
    clock = Clock()

    async def go() -> None:
        async with WebServer({"/ok": page("<title>ok</title>")}) as server:
            svc = service(config(server.port, cache_ttl_s=100.0, failure_ttl_s=10.0),
                          clock=clock)
            for _ in range(3):
                assert (await svc.preview(APP, USER, server.url("/ok#x"))).title == "ok"
            for _ in range(3):
                with pytest.raises(PreviewFetchError, match="HTTP 404"):
                    await svc.preview(APP, USER, server.url("/gone"))
            assert [r.path for r in server.requests] == ["/ok", "/gone"]
            clock.now += 10.0
            with pytest.raises(PreviewFetchError, match="HTTP 404"):
                await svc.preview(APP, USER, server.url("/gone"))
            await svc.preview(APP, USER, server.url("/ok"))
            assert [r.path for r in server.requests] == ["/ok", "/gone", "/gone"]
            clock.now += 90.0
            await svc.preview(APP, USER, server.url("/ok"))
            assert [r.path for r in server.requests][-1] == "/ok"
            assert len(server.requests) == 4
    asyncio.run(go())


def test_each_app_has_its_own_entry_and_image_file() -> None:
    images = Images()
    html = '<title>t</title><meta property="og:image" content="/i.png">'

    async def go() -> None:
        async with WebServer({"/": page(html), "/i.png": raw(response(
                200, png(), {"Content-Type": "image/png"}))}) as server:
            svc = service(config(server.port), store_image=images)
            first = await svc.preview(1, USER, server.url())
            second = await svc.preview(2, USER, server.url())
            assert first.image_file_id != second.image_file_id
    asyncio.run(go())
    assert [app for app, _, _ in images.stored] == [1, 2]


def test_concurrent_requests_share_one_fetch() -> None:
    async def go() -> None:
        release = asyncio.Event()

        async def held(request: Request, writer: asyncio.StreamWriter) -> None:
            await release.wait()
            writer.write(response(200, b"<title>once</title>", {"Content-Type": "text/html"}))

        async with WebServer({"/": held}) as server:
            svc = service(config(server.port, per_user_per_minute=1))
            waiters = [asyncio.get_running_loop().create_task(svc.preview(APP, user, server.url()))
                       for user in (USER, USER, USER, 43, 44)]
            await server.arrived.wait()
            waiters[0].cancel()  # one client leaves: the others still get their answer
            release.set()
            done = await asyncio.gather(*waiters[1:])
        assert {p.title for p in done} == {"once"}
        assert len(server.requests) == 1
    asyncio.run(go())


def test_the_rate_limit_counts_misses_per_user() -> None:
    clock = Clock()

    async def go() -> None:
        async with WebServer({f"/{n}": page(f"<title>{n}</title>") for n in range(6)}) as server:
            svc = service(config(server.port, per_user_per_minute=2), clock=clock)
            await svc.preview(APP, USER, server.url("/0"))
            await svc.preview(APP, USER, server.url("/1"))
            for _ in range(5):  # hits cost nothing
                await svc.preview(APP, USER, server.url("/0"))
            with pytest.raises(TooManyRequestsError) as limited:
                await svc.preview(APP, USER, server.url("/2"))
            assert limited.value.retry_after_s == 30.0
            assert "media.previews.per_user_per_minute" in str(limited.value)
            await svc.preview(APP, 43, server.url("/2"))  # another user
            await svc.preview(8, USER, server.url("/3"))  # the same user id in another app
            clock.now += 30.0
            await svc.preview(APP, USER, server.url("/4"))
            with pytest.raises(TooManyRequestsError):
                await svc.preview(APP, USER, server.url("/5"))
        assert sorted(r.path for r in server.requests) == ["/0", "/1", "/2", "/3", "/4"]
    asyncio.run(go())


def test_an_app_has_at_most_its_share_of_fetches_under_way() -> None:
    """One app's pages that never answer held every turn of the server's fetches."""
    async def go() -> None:
        release = asyncio.Event()

        async def held(request: Request, writer: asyncio.StreamWriter) -> None:
            await release.wait()
            writer.write(response(200, b"<title>late</title>", {"Content-Type": "text/html"}))

        async with WebServer({"/slow": held, "/quick": page("<title>quick</title>")}) as server:
            svc = service(config(server.port, timeout_s=10.0))
            slow = [asyncio.get_running_loop().create_task(
                svc.preview(APP, USER + n, server.url(f"/slow?{n}")))
                for n in range(MAX_APP_FETCHES)]
            await asyncio.sleep(0)  # each has taken its turn
            with pytest.raises(TooManyRequestsError, match="4 link previews") as refused:
                await svc.preview(APP, USER + 99, server.url("/slow?more"))
            assert refused.value.retry_after_s == 10.0
            assert (await svc.preview(APP + 1, USER, server.url("/quick"))).title == "quick"
            release.set()
            assert {p.title for p in await asyncio.gather(*slow)} == {"late"}
            # Their turns came back: the app fetches again.
            assert (await svc.preview(APP, USER, server.url("/quick"))).title == "quick"
    asyncio.run(go())


def test_turned_off_and_close() -> None:
    async def go() -> None:
        with pytest.raises(PreviewRefusedError, match=r"media\.previews\.enabled"):
            await PreviewService(PreviewConfig(enabled=False)).preview(APP, USER,
                                                                      "https://example.com/")
        release = asyncio.Event()

        async def stalled(request: Request, writer: asyncio.StreamWriter) -> None:
            await release.wait()

        async with WebServer({"/": stalled}) as server:
            svc = service(config(server.port, timeout_s=60.0))
            waiter = asyncio.get_running_loop().create_task(svc.preview(APP, USER, server.url()))
            await server.arrived.wait()
            await svc.close()
            with pytest.raises(asyncio.CancelledError):
                await waiter
    asyncio.run(go())
