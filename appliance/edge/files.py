"""The IP filter's files: where `tidings ipfilter`, the operator REST routes and
the running server meet.

Each list is a text file of CIDRs, one per line.  Writers (the CLI, the REST
routes) take an advisory lock, rewrite the file to a temporary name and
rename it over the old one, so the server (which reloads a file when its
modification time changes) never reads half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.edge.config import EdgeConfig
from appliance.edge.ipfilter import Network, parse_cidr, read_cidrs
from appliance.errors import UsageError

LISTS = ("allow", "block")
#: Entries one file may hold: bounds the memory and the time of a reload.
MAX_FILE_ENTRIES = 1_000_000


@dataclass(frozen=True, slots=True)
class FilterFiles:
    """The allow and block files of one data directory."""

    allow: Path
    block: Path

    @classmethod
    def of(cls, config: EdgeConfig, data_dir: Path) -> FilterFiles:
        base = data_dir / "ipfilter"
        return cls(Path(config.allow_file).expanduser() if config.allow_file
                   else base / "allow.txt",
                   Path(config.block_file).expanduser() if config.block_file
                   else base / "block.txt")

    def path(self, name: str) -> Path:
        if name not in LISTS:
            raise UsageError(f"no list {name!r}: allow or block")
        return self.allow if name == "allow" else self.block

    def read(self, name: str) -> list[Network]:
        """The CIDRs of list `name`; a missing file is an empty list.

        Raises:
            UsageError: a line is not a CIDR (file and line named), or the file is too long.
        """
        path = self.path(name)
        try:
            with path.open(encoding="utf-8", errors="replace") as lines:
                networks = read_cidrs(_bounded(lines, path), str(path))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        return networks

    def stamp(self) -> tuple[float, float]:
        """Modification times (0 for a missing file): a change means reload."""
        return _mtime(self.allow), _mtime(self.block)

    def change(self, name: str, add: Iterable[str] = (), remove: Iterable[str] = ()
               ) -> tuple[int, int]:
        """Add and remove CIDRs in list `name`; returns (added, removed).

        Raises:
            UsageError: a CIDR is malformed (nothing is changed then).
        """
        adding = [parse_cidr(text) for text in add]
        removing = {parse_cidr(text) for text in remove}
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _locked(path):
            current = self.read(name)
            present = set(current)
            new = [n for n in dict.fromkeys(adding) if n not in present]
            kept = [n for n in current if n not in removing]
            removed = len(current) - len(kept)
            if new or removed:
                _replace(path, [*kept, *new])
        return len(new), removed


def _bounded(lines: Iterable[str], path: Path) -> Iterator[str]:
    for number, line in enumerate(lines, 1):
        if number > MAX_FILE_ENTRIES:
            raise UsageError(f"{path}: more than {MAX_FILE_ENTRIES} lines")
        yield line


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return 0.0


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _replace(path: Path, networks: list[Network]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
              encoding="utf-8") as out:
        out.writelines(f"{n}\n" for n in networks)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
