"""Downloads are https (or loopback http), bounded in bytes and time."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler

import pytest

from appliance.errors import ReleaseError
from appliance.upgrade.fetch import Fetcher, check_url
from tests.upgrade.signed import ReleaseServer


@pytest.mark.parametrize("url", ["https://releases.example", "http://127.0.0.1:8080/x",
                                 "http://localhost/", "http://[::1]:9/"])
def test_allowed_urls(url: str) -> None:
    assert check_url(url) == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://releases.example", "ftp://127.0.0.1/",
                                 "file:///etc/passwd", "https://", "http://127.0.0.1.evil/"])
def test_refused_urls(url: str) -> None:
    with pytest.raises(ReleaseError, match="must be https"):
        check_url(url)


def test_small_files_are_bounded(releases: ReleaseServer) -> None:
    releases.files["/ok"] = b"x" * 100
    releases.behaviours["/endless"] = releases.endless
    releases.behaviours["/huge"] = releases.huge_length
    fetcher = Fetcher(releases.url, timeout_s=5)
    assert fetcher.get(f"{releases.url}/ok", 100) == b"x" * 100
    with pytest.raises(ReleaseError, match="100 bytes, more than the 99"):
        fetcher.get(f"{releases.url}/ok", 99)
    started = time.monotonic()
    with pytest.raises(ReleaseError, match="more than the 65536 bytes"):
        fetcher.get(f"{releases.url}/endless", 65536)
    with pytest.raises(ReleaseError, match="1099511627776 bytes, more than"):
        fetcher.get(f"{releases.url}/huge", 65536)
    assert time.monotonic() - started < 5


def test_a_silent_server_times_out(releases: ReleaseServer) -> None:
    releases.behaviours["/hang"] = releases.hang
    started = time.monotonic()
    with pytest.raises(ReleaseError, match="timed out"):
        Fetcher(releases.url, timeout_s=0.5).get(f"{releases.url}/hang", 100)
    assert time.monotonic() - started < 5


def test_a_trickle_is_cut_at_the_deadline(releases: ReleaseServer) -> None:
    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        try:
            for _ in range(100):
                handler.wfile.write(b"x")
                handler.wfile.flush()
                releases.release_hangs.wait(0.2)  # slower than the deadline allows
        except OSError:
            return

    releases.behaviours["/trickle"] = trickle
    started = time.monotonic()
    with pytest.raises(ReleaseError, match="not downloaded within 1 s"):
        Fetcher(releases.url, timeout_s=5).stream(f"{releases.url}/trickle", 1000,
                                                  lambda b: None, 1.0)
    assert time.monotonic() - started < 5


def test_a_redirect_may_not_leave_the_rules(releases: ReleaseServer) -> None:
    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", "http://example.invalid/SHA256SUMS")
        handler.end_headers()

    releases.behaviours["/moved"] = redirect
    with pytest.raises(ReleaseError, match="must be https"):
        Fetcher(releases.url).get(f"{releases.url}/moved", 100)


def test_http_errors_are_named(releases: ReleaseServer) -> None:
    with pytest.raises(ReleaseError, match="HTTP 404"):
        Fetcher(releases.url).get(f"{releases.url}/0.9.9/manifest.json", 100)
