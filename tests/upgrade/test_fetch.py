"""Downloads are https (or loopback http), bounded in bytes and time."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler

import pytest

from appliance.errors import ReleaseError
from appliance.upgrade.fetch import Fetcher, check_url
from tests.upgrade.signed import ReleaseServer


@pytest.mark.parametrize("url", ["https://release_server.example", "http://127.0.0.1:8080/x",
                                 "http://localhost/", "http://[::1]:9/"])
def test_allowed_urls(url: str) -> None:
    assert check_url(url) == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://release_server.example", "ftp://127.0.0.1/",
                                 "file:///etc/passwd", "https://", "http://127.0.0.1.evil/"])
def test_refused_urls(url: str) -> None:
    with pytest.raises(ReleaseError, match="must be https"):
        check_url(url)


def test_small_files_are_bounded(release_server: ReleaseServer) -> None:
    release_server.files["/ok"] = b"x" * 100
    release_server.behaviours["/endless"] = release_server.endless
    release_server.behaviours["/huge"] = release_server.huge_length
    fetcher = Fetcher(release_server.url, timeout_s=5)
    assert fetcher.get(f"{release_server.url}/ok", 100) == b"x" * 100
    with pytest.raises(ReleaseError, match="100 bytes, more than the 99"):
        fetcher.get(f"{release_server.url}/ok", 99)
    started = time.monotonic()
    with pytest.raises(ReleaseError, match="more than the 65536 bytes"):
        fetcher.get(f"{release_server.url}/endless", 65536)
    with pytest.raises(ReleaseError, match="1099511627776 bytes, more than"):
        fetcher.get(f"{release_server.url}/huge", 65536)
    assert time.monotonic() - started < 5


def test_a_silent_server_times_out(release_server: ReleaseServer) -> None:
    release_server.behaviours["/hang"] = release_server.hang
    started = time.monotonic()
    with pytest.raises(ReleaseError, match="timed out"):
        Fetcher(release_server.url, timeout_s=0.5).get(f"{release_server.url}/hang", 100)
    assert time.monotonic() - started < 5


def test_a_trickle_is_cut_at_the_deadline(release_server: ReleaseServer) -> None:
    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        try:
            for _ in range(100):
                handler.wfile.write(b"x")
                handler.wfile.flush()
                release_server.release_hangs.wait(0.2)  # slower than the deadline allows
        except OSError:
            return

    release_server.behaviours["/trickle"] = trickle
    started = time.monotonic()
    with pytest.raises(ReleaseError, match="not downloaded within 1 s"):
        Fetcher(release_server.url, timeout_s=5).stream(f"{release_server.url}/trickle", 1000,
                                                  lambda b: None, 1.0)
    assert time.monotonic() - started < 5


def test_a_redirect_may_not_leave_the_rules(release_server: ReleaseServer) -> None:
    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", "http://example.invalid/SHA256SUMS")
        handler.end_headers()

    release_server.behaviours["/moved"] = redirect
    with pytest.raises(ReleaseError, match="must be https"):
        Fetcher(release_server.url).get(f"{release_server.url}/moved", 100)


def test_http_errors_are_named(release_server: ReleaseServer) -> None:
    with pytest.raises(ReleaseError, match="HTTP 404"):
        Fetcher(release_server.url).get(f"{release_server.url}/0.9.9/manifest.json", 100)
