"""Layers import downward only (style guide 9.3), checked from the source with ast."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "appliance"

# package prefix -> module prefixes it must never import
FORBIDDEN = {
    "appliance.protocol": ("asyncio", "socket", "ssl", "appliance.engine", "appliance.storage",
                           "appliance.sdk",
                           "appliance.transport", "appliance.cli", "appliance.service",
                           "click", "sqlite3"),
    "appliance.engine": ("appliance.transport", "appliance.storage.sqlite",
                         "appliance.storage.mariadb", "mariadb", "appliance.cli",
                         "socket", "ssl", "sqlite3", "click", "asyncio", "prometheus_client",
                         "appliance.metrics"),
    # Groups (issue 16): changes through the store's interface and the engine's submit;
    # never the service layer (the CLI's), the REST API, a backend or SQL.
    "appliance.engine.groups": ("appliance.service", "appliance.api", "appliance.storage.sql",
                                "appliance.storage.sqlite", "appliance.storage.mariadb"),
    # The name rules: pure, under every layer that checks a name.
    "appliance.names": ("appliance.engine", "appliance.storage", "appliance.service",
                        "appliance.api", "appliance.transport", "appliance.cli", "asyncio"),
    "appliance.storage": ("appliance.engine", "appliance.transport", "appliance.cli",
                          "appliance.service", "click"),
    "appliance.service": ("appliance.transport", "appliance.cli", "appliance.storage.sqlite",
                          "click", "asyncio"),
    # The SDK ships alone (packaging/sdk, as `tidings`): the codec and the error root,
    # nothing else; packaging/sdk/stage.py refuses any other import at build time.
    # Files (issue 15) go over HTTP with h11 alone: no server part, no HTTP/2, no Pillow.
    "appliance.sdk": ("appliance.engine", "appliance.storage", "appliance.transport",
                      "appliance.cli", "appliance.service", "appliance.config", "appliance.app",
                      "appliance.api", "appliance.media", "appliance.certs", "click", "uvloop",
                      "h2", "httpx", "PIL"),
    # The REST API: requests in, responses out; no sockets, no backend choice.
    "appliance.api": ("appliance.transport", "appliance.cli", "appliance.storage.sqlite",
                      "appliance.storage.mariadb", "mariadb", "appliance.dbserver",
                      "socket", "ssl", "click", "h11", "h2", "wsproto",
                      # /metrics: the route needs only `api.metrics.MetricsAccess`.
                      "appliance.metrics", "prometheus_client"),
    # The certificate manager (issue 13): it keeps certificates in the store
    # through its interface, never a backend; TLS contexts are the transport's.
    "appliance.certs": ("appliance.transport", "appliance.cli", "appliance.storage.sql",
                        "appliance.storage.sqlite", "appliance.storage.mariadb", "mariadb",
                        "appliance.engine", "appliance.api", "appliance.service", "ssl",
                        "click", "h11", "h2"),
    # The private MariaDB server's processes: no SQL, no event loop.
    "appliance.dbserver": ("appliance.transport", "appliance.cli", "appliance.storage",
                           "appliance.engine", "appliance.service", "appliance.api",
                           "asyncio", "click", "mariadb"),
    # The edge's decisions (IP filter, limits): pure, no sockets, no loop.
    "appliance.edge": ("asyncio", "socket", "ssl", "appliance.transport", "appliance.engine",
                       "appliance.storage", "appliance.service", "appliance.api",
                       "appliance.cli", "click", "sqlite3", "uvloop"),
    # Releases (issue 14): formats, signatures, writing a release; no server, no CLI.
    "appliance.release": ("appliance.transport", "appliance.cli", "appliance.storage",
                          "appliance.engine", "appliance.service", "appliance.api",
                          "appliance.app", "asyncio", "socket", "click"),
    # Media (issue 15): files, images, previews; the store only through its interface, no
    # HTTP server of its own (api, transport), no engine.  images.codec runs in workers.
    "appliance.media": ("appliance.transport", "appliance.api", "appliance.cli", "appliance.app",
                        "appliance.engine", "appliance.service", "appliance.storage.sql",
                        "appliance.storage.sqlite", "appliance.storage.mariadb", "mariadb",
                        "sqlite3", "click", "h11", "h2", "wsproto"),
    # Images: the codec runs in worker processes (Pillow, the stdlib, errors); the
    # server side (pool, protocol, model) never loads Pillow.
    "appliance.media.images": ("appliance.storage", "appliance.config", "appliance.protocol",
                               "appliance.media.previews", "httpx", "socket", "ssl"),
    "appliance.media.images.codec": ("asyncio", "appliance.system",
                                     "appliance.media.images.pool",
                                     "appliance.media.images.worker"),
    "appliance.media.images.headers": ("PIL", "asyncio", "appliance.system"),
    "appliance.media.images.pool": ("PIL", "appliance.media.images.codec",
                                    "appliance.media.images.worker"),
    "appliance.media.images.process": ("PIL", "appliance.media.images.codec",
                                       "appliance.media.images.worker"),
    "appliance.media.images.protocol": ("PIL", "asyncio", "appliance.media.images.codec"),
    "appliance.media.images.model": ("PIL", "asyncio"),
    # The server side of media never loads Pillow (only image workers do): the codec
    # is reached through the pool.
    "appliance.media.files": ("PIL", "appliance.media.images.codec"),
    "appliance.media.runtime": ("PIL", "appliance.media.images.codec"),
    # Link previews: no store (the image goes out through the store_image callback), no
    # Pillow, and HTTP only through fetch's pinned httpcore connection: never httpx or
    # urllib, which read proxies from the environment and resolve names themselves.
    "appliance.media.previews": ("appliance.storage", "appliance.media.images", "PIL",
                                 "httpx", "urllib.request", "http.client", "requests",
                                 "aiohttp"),
    "appliance.config": ("appliance.transport", "appliance.cli", "appliance.storage", "click"),
    # What a running server says about itself (issue 14): a file format and its
    # readers, used by the server and by the CLI; no loop, no store, no TLS stack.
    "appliance.status": ("asyncio", "appliance.transport", "appliance.engine",
                         "appliance.storage", "appliance.service", "appliance.certs",
                         "appliance.api", "appliance.cli", "appliance.doctor", "click",
                         "mariadb", "sqlite3", "cryptography"),
    # `tidings doctor`'s checks: they read the store through its maintenance
    # functions, never a backend or the server's parts.
    "appliance.doctor": ("appliance.transport", "appliance.engine", "appliance.api",
                         "appliance.cli", "appliance.app", "appliance.storage.sql",
                         "appliance.storage.sqlite", "appliance.storage.mariadb", "mariadb",
                         "sqlite3", "click"),
    # /metrics (issue 14): reads the server's parts at scrape time; never a backend,
    # a socket or a protocol library, never the REST layer that serves it.
    "appliance.metrics": ("appliance.cli", "click", "appliance.api", "appliance.storage.sql",
                          "appliance.storage.sqlite", "appliance.storage.mariadb", "mariadb",
                          "sqlite3", "appliance.dbserver", "socket", "ssl", "h11", "h2",
                          "wsproto"),
    # Backup and restore (issue 14): the store through storage's snapshot and
    # maintenance calls and MariaDB's own client programs; no server, no loop.
    "appliance.backup": ("appliance.transport", "appliance.api", "appliance.cli",
                         "appliance.engine", "appliance.app", "appliance.upgrade",
                         "appliance.storage.sqlite", "appliance.storage.mariadb", "mariadb",
                         "asyncio", "click", "h11", "h2", "wsproto"),
    # The upgrade: releases, the executable, systemd and a health probe from the
    # operator's shell; the store only through appliance.backup.
    "appliance.upgrade": ("appliance.transport", "appliance.api", "appliance.cli",
                          "appliance.engine", "appliance.app", "appliance.storage",
                          "mariadb", "sqlite3", "asyncio", "click", "h11", "h2", "wsproto"),
    # The setup wizard (issue 14): services and the composition root, never a backend,
    # the wire or the REST API's insides; its prompts are its own, not click's.
    "appliance.setup": ("appliance.transport", "appliance.api", "appliance.cli",
                        "appliance.storage.sqlite", "appliance.storage.mariadb",
                        "appliance.storage.sql", "appliance.protocol", "mariadb", "click",
                        "h11", "h2", "wsproto"),
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(p for p in parts if p != "__init__")
        out.append((name, path))
    return out


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize(("name", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_layer_imports_downward_only(name: str, path: Path) -> None:
    for layer, banned in FORBIDDEN.items():
        if name == layer or name.startswith(layer + "."):
            bad = sorted(i for i in _imports(path)
                         for b in banned if i == b or i.startswith(b + "."))
            assert not bad, f"{name} must not import {bad}"
    if not name.startswith("appliance.cli"):
        assert "click" not in _imports(path), f"{name}: only the CLI imports click"
    if name.startswith("appliance.transport.") and name != "appliance.transport.server":
        # Protocols depend on the small `host` interfaces, never on `Server`
        # (issue 12: no import circle between server.py and the protocols).
        assert "appliance.transport.server" not in _imports(path), \
            f"{name}: depend on appliance.transport.host, not on the server"
    if not name.startswith("appliance.storage"):
        assert not {i for i in _imports(path) if i.startswith("appliance.storage.sqlite")}, \
            f"{name}: only storage.factory picks a backend"
