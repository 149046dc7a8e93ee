"""Layers import downward only (style guide 9.3), checked from the source with ast."""

from __future__ import annotations

import ast
import operator
from collections.abc import Iterator
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
    # Administration: the store through its interface and maintenance calls, never a
    # backend (issue 16: `service.database` imported the SQL migrator and MariaDB's bootstrap).
    "appliance.service": ("appliance.transport", "appliance.cli", "appliance.storage.sqlite",
                          "appliance.storage.sql", "appliance.storage.mariadb", "mariadb",
                          "sqlite3", "click", "asyncio",
                          # token_hash is appliance.credentials' (issue 16), not the engine's.
                          "appliance.engine.core", "appliance.engine.delivery"),
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
                      "appliance.metrics", "prometheus_client",
                      # Sends go through `Engine.submit` (issue 16): the REST API no longer
                      # fakes a Session nor reads the engine's encoded frames or quotas.
                      "appliance.engine.session", "appliance.engine.delivery",
                      "appliance.engine.commit", "appliance.engine.quotas",
                      "appliance.engine.ports", "appliance.protocol.wire.frames"),
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
    # EngineLimits lives here and the engine imports it (issue 16): never the reverse.
    "appliance.config": ("appliance.transport", "appliance.cli", "appliance.storage", "click",
                         "appliance.engine"),
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


def _forbidden(name: str, imports: set[str]) -> list[str]:
    return sorted(i for layer, banned in FORBIDDEN.items()
                  if name == layer or name.startswith(layer + ".")
                  for i in imports for b in banned if i == b or i.startswith(b + "."))


#: Imports issue 16 removed, in the module that had them: each must stay refused.
REMOVED = [
    ("appliance.config.model", "appliance.engine.ports"),          # EngineLimits
    ("appliance.service.admin", "appliance.engine.delivery"),      # token_hash
    ("appliance.api.usertokens", "appliance.engine.delivery"),     # token_hash
    ("appliance.api.messages", "appliance.engine.session"),        # the faked Session
    ("appliance.api.messages", "appliance.engine.quotas"),         # UNLIMITED_CREDIT
    ("appliance.api.messages", "appliance.protocol.wire.frames"),  # U64_MAX via frames
    ("appliance.service.database", "appliance.storage.sql.migrate"),  # SchemaStatus
    ("appliance.service.database", "appliance.storage.mariadb.bootstrap"),
]


@pytest.mark.parametrize(("module", "imported"), REMOVED, ids=[f"{m}->{i}" for m, i in REMOVED])
def test_each_removed_import_is_refused(module: str, imported: str) -> None:
    assert _forbidden(module, {imported}) == [imported]


@pytest.mark.parametrize(("name", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_layer_imports_downward_only(name: str, path: Path) -> None:
    bad = _forbidden(name, _imports(path))
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


# --- the wire's codes and bounds are defined once (issue 16) ----------------------------

#: Names only protocol/wire/constants.py gives a value; with or without a leading
#: underscore, nobody else sets them to a number: they import them (an alias such
#: as ``_SENT = int(Status.SENT)`` is an import, not a repeat).
WIRE_NAMES = frozenset({
    "SENT", "DELIVERED", "READ", "EXPIRED", "FAILED", "INVALID_DEST", "NOT_MEMBER",
    "INBOX_FULL", "INVALID_FILE", "DELIVERY_RECEIPT", "READ_RECEIPT", "U64_MAX", "U32_MAX",
    "STORED_U64_MAX", "MAX_ADDRESS_BYTES", "DEFAULT_EXPIRY_S",
})
#: Values that are the wire's integer bounds whatever a module calls them.
WIRE_BOUNDS = {2**64 - 1: "U64_MAX", 2**64: "U64_MAX + 1", 2**63 - 1: "STORED_U64_MAX",
               2**63: "STORED_U64_MAX + 1", 2**32 - 1: "U32_MAX"}
CONSTANTS = ROOT / "protocol" / "wire" / "constants.py"
#: Modules allowed to repeat one (none: issue 16 emptied it).
REPEATS_ALLOWED_FOR_NOW: tuple[str, ...] = ()
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Pow: operator.pow, ast.LShift: operator.lshift, ast.BitOr: operator.or_}


def _number(node: ast.expr) -> int | None:
    """The value of an integer written out in literals and arithmetic, else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _number(node.operand)
        return None if value is None else -value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _number(node.left), _number(node.right)
        if left is None or right is None:
            return None
        return int(_OPS[type(node.op)](left, right))
    return None


def _assigned(target: ast.expr, value: ast.expr) -> Iterator[tuple[str, ast.expr]]:
    if isinstance(target, ast.Name):
        yield target.id, value
    elif isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) \
            and len(target.elts) == len(value.elts):
        for t, v in zip(target.elts, value.elts, strict=True):
            yield from _assigned(t, v)


def wire_repeats(source: str) -> list[str]:
    """Module-level assignments that repeat a wire code or bound as a number."""
    found = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            pairs = [p for t in node.targets for p in _assigned(t, node.value)]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            pairs = list(_assigned(node.target, node.value))
        else:
            continue
        for name, value in pairs:
            number = _number(value)
            if number is None:
                continue
            if name.lstrip("_") in WIRE_NAMES:
                found.append(f"line {node.lineno}: {name} = {number}")
            elif number in WIRE_BOUNDS:
                found.append(f"line {node.lineno}: {name} = {number} (that is"
                             f" {WIRE_BOUNDS[number]})")
    return found


def test_the_repeat_check_catches_each_form() -> None:
    assert wire_repeats("SENT, DELIVERED, READ = 1, 2, 3") == [
        "line 1: SENT = 1", "line 1: DELIVERED = 2", "line 1: READ = 3"]
    assert wire_repeats("_DEFAULT_EXPIRY_S = 7 * 86400") == ["line 1: _DEFAULT_EXPIRY_S = 604800"]
    assert wire_repeats("BIG: Final = (1 << 63) - 1") == [
        "line 1: BIG = 9223372036854775807 (that is STORED_U64_MAX)"]
    assert wire_repeats("_U32, _U64 = 2**32 - 1, 2**64 - 1") == [
        "line 1: _U32 = 4294967295 (that is U32_MAX)",
        "line 1: _U64 = 18446744073709551615 (that is U64_MAX)"]
    assert wire_repeats("_SENT = int(Status.SENT)\nLIMIT = 2**63 - 2\nREAD = 'r'") == []


@pytest.mark.parametrize(("name", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_wire_codes_and_bounds_are_imported_not_repeated(name: str, path: Path) -> None:
    relative = path.relative_to(ROOT).as_posix()
    if path == CONSTANTS or relative.startswith(REPEATS_ALLOWED_FOR_NOW):
        return
    assert not wire_repeats(path.read_text()), \
        f"{name}: import these from appliance.protocol.wire: {wire_repeats(path.read_text())}"



# --- names with one home (issue 16) -----------------------------------------------------

#: name -> the one module it is imported from.
HOMES = {"EngineLimits": "appliance.config.limits", "token_hash": "appliance.credentials",
         "GroupRoster": ("appliance.storage.models", "appliance.storage.routing"),
         "group_recipients": "appliance.storage.routing"}


@pytest.mark.parametrize(("name", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_moved_names_are_imported_from_their_home(name: str, path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                home = HOMES.get(alias.name)
                if home is not None:
                    homes = (home,) if isinstance(home, str) else home
                    assert node.module in homes, \
                        f"{name} imports {alias.name} from {node.module}, not {homes}"
