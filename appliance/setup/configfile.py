"""The configuration file the wizard writes: read, changed in place, written atomically.

tomlkit edits the document the operator may have annotated: only the keys
whose answer changed are touched, every other key and every comment stays.
The new text must load (`load_config`) before it replaces the old file;
the write is a temporary file in the same directory, fsync, rename, fsync
of the directory, so a crash leaves the old file or the new one, never half.
Mode 0640, owner root:tidings (the service reads it, only root writes it).
"""

from __future__ import annotations

import contextlib
import grp
import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import tomlkit
from tomlkit.items import Table

from appliance.config import load_config
from appliance.errors import ConfigError, LifecycleError
from appliance.setup import dbchoice
from appliance.setup.answers import Answers
from appliance.system import layout

CONFIG_MODE: Final = 0o640
CONFIG_DIR_MODE: Final = 0o750
#: A configuration file is a few KiB; past this it is not one the wizard edits.
MAX_CONFIG_BYTES: Final = 1024 * 1024
HEADER: Final = ("Tidings configuration, written by `tidings setup`: run it again to change"
                 " these answers; other keys and comments are kept.")


@dataclass(frozen=True, slots=True)
class ExistingConfig:
    """The configuration file as it is now ("" and {} when there is none)."""

    path: Path
    text: str
    tree: dict[str, Any]

    @property
    def exists(self) -> bool:
        return bool(self.text)


def read(path: Path) -> ExistingConfig:
    """Read the current file.

    Raises:
        ConfigError: unreadable, too big or not TOML (naming the file).
    """
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return ExistingConfig(path, "", {})
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", key_path=str(path)) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes", key_path=str(path))
    try:
        text = data.decode("utf-8")
        return ExistingConfig(path, text, tomllib.loads(text))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"not valid TOML ({exc}): fix or remove it, then run setup again",
                          key_path=str(path)) from None


def _section(tree: dict[str, Any], name: str) -> dict[str, Any]:
    value = tree.get(name, {})
    return value if isinstance(value, dict) else {}


def existing_data_dir(existing: ExistingConfig) -> Path | None:
    value = _section(existing.tree, "storage").get("data_dir")
    return Path(value).expanduser() if isinstance(value, str) and value else None


def existing_answers(existing: ExistingConfig, data_dir: Path) -> Answers:
    """The answers the current file stands for (the defaults of a re-run)."""
    if not existing.exists:
        return Answers()
    server, tls = _section(existing.tree, "server"), _section(existing.tree, "tls")
    acme, storage = _section(existing.tree, "acme"), _section(existing.tree, "storage")
    hostnames = [h for h in acme.get("hostnames", []) if isinstance(h, str)]
    hostname = server.get("hostname") or (hostnames[0] if hostnames else None)
    mode = "acme" if hostnames else "files" if tls.get("cert") else "self-signed"
    database = storage.get("database", "")
    http_port = server.get("redirect_port")
    return Answers(
        hostname=_str(hostname), tls=mode, acme_email=_str(acme.get("email")),
        cert=_str(tls.get("cert")), key=_str(tls.get("key")),
        port=_int(server.get("port")),
        http_port=-1 if isinstance(http_port, int) and http_port < 0 else _int(http_port),
        database=dbchoice.answer_of(database if isinstance(database, str) else "", data_dir),
        listen_address=_str(server.get("host"), empty_ok=True))


def _str(value: Any, *, empty_ok: bool = False) -> str | None:
    return value if isinstance(value, str) and (value or empty_ok) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def updated(existing: ExistingConfig, answers: Answers, data_dir: Path,
            database_setting: str) -> str:
    """The file's new text: the answers set, everything else as it was."""
    doc = tomlkit.parse(existing.text) if existing.exists else _new_document()
    server = _table(doc, "server")
    _set(server, "hostname", answers.hostname)
    _set(server, "host", answers.listen_address)
    _set(server, "port", answers.port)
    _set(server, "redirect_port", answers.http_port)
    storage = _table(doc, "storage")
    _set(storage, "data_dir", str(data_dir))
    _set(storage, "database", database_setting)
    if answers.tls == "acme":
        acme = _table(doc, "acme")
        current = [str(h) for h in acme.get("hostnames", [])]
        if answers.hostname not in current:
            # A list the operator extended keeps its other names, this one first.
            _set(acme, "hostnames", [answers.hostname, *current[1:]])
        _set(acme, "email", answers.acme_email)
        _drop(doc, "tls", "cert", "key")
    elif answers.tls == "files":
        tls = _table(doc, "tls")
        _set(tls, "cert", answers.cert)
        _set(tls, "key", answers.key)
        _drop(doc, "acme", "hostnames")
    else:
        _drop(doc, "tls", "cert", "key")
        _drop(doc, "acme", "hostnames")
    return tomlkit.dumps(doc)


def _new_document() -> tomlkit.TOMLDocument:
    doc = tomlkit.document()
    doc.add(tomlkit.comment(HEADER))
    doc.add(tomlkit.nl())
    return doc


def _table(doc: tomlkit.TOMLDocument, name: str) -> Table:
    if name not in doc:
        doc.add(name, tomlkit.table())
    table = doc[name]
    if not isinstance(table, Table):
        raise ConfigError("must be a table", key_path=name)
    return table


#: The comment a ``host = ""`` gets: an empty string does not say it by itself.
EVERY_ADDRESS: Final = "every address, IPv4 and IPv6"


def _set(table: Table, key: str, value: Any) -> None:
    if value is None:
        return
    current = table.get(key)
    if current is not None and _plain(current) == value:
        return  # untouched: its formatting and comment stay
    item = tomlkit.item(value)
    if value == "" and key == "host":
        item.comment(EVERY_ADDRESS)
    table[key] = item


def _plain(item: Any) -> Any:
    return item.unwrap() if hasattr(item, "unwrap") else item


def _drop(doc: tomlkit.TOMLDocument, section: str, *keys: str) -> None:
    table = doc.get(section)
    if isinstance(table, Table):
        for key in keys:
            if key in table:
                del table[key]


def changed_keys(old: ExistingConfig, new_text: str) -> list[str]:
    """``section.key`` of every value that differs between the files."""
    new = tomllib.loads(new_text)
    keys = []
    for section in sorted({*old.tree, *new}):
        before, after = _section(old.tree, section), _section(new, section)
        keys += [f"{section}.{k}" for k in sorted({*before, *after})
                 if before.get(k) != after.get(k)]
    return keys


def owner_for(path: Path) -> tuple[int, int] | None:
    """root:tidings when running as root; None (keep the writer's) otherwise.

    Raises:
        LifecycleError: root, writing the installed file, and no ``tidings`` group.
    """
    if os.geteuid() != 0:
        return None
    try:
        return 0, grp.getgrnam(layout.SERVICE_USER).gr_gid
    except KeyError:
        if path == layout.CONFIG_FILE:
            raise LifecycleError(f"there is no {layout.SERVICE_USER!r} group",
                                 step=f"writing {path}",
                                 fix="run the installer first (install.sh)") from None
        return None  # a configuration elsewhere (tests, a user's own): root's


def write_atomically(path: Path, text: str, owner: tuple[int, int] | None) -> None:
    """Replace `path` by `text` (mode 0640, `owner`), after checking that it loads.

    Raises:
        ConfigError: the new text does not load (nothing replaced).
        LifecycleError: the file cannot be written.
    """
    directory = path.parent
    try:
        if not directory.exists():
            directory.mkdir(parents=True)
            directory.chmod(CONFIG_DIR_MODE)
            if owner is not None:
                os.chown(directory, *owner)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise LifecycleError(exc.strerror or str(exc), step=f"writing {path}",
                             fix="run setup as root (sudo)") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), CONFIG_MODE)
            if owner is not None:
                os.fchown(f.fileno(), *owner)
            os.fsync(f.fileno())
        load_config(Path(tmp))  # never replace a loading file by one that does not load
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise LifecycleError(exc.strerror or str(exc), step=f"writing {path}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
