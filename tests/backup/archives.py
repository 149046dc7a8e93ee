"""Rewriting a genuine backup archive into a hostile one, and checking a refusal."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

from tests.conftest import tidings

Members = list[tuple[tarfile.TarInfo, bytes | None]]
Edit = Callable[[dict[str, object], Members], None]


def rewrite(source: Path, target: Path, edit: Edit) -> Path:
    """Copy `source` with its manifest and members changed by `edit`."""
    with tarfile.open(source) as tar:
        members: Members = []
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            members.append((info, handle.read() if handle else None))
    manifest = json.loads(members[0][1] or b"")
    rest = members[1:]
    edit(manifest, rest)
    data = json.dumps(manifest).encode()
    head = tarfile.TarInfo("MANIFEST.json")
    head.size = len(data)
    with tarfile.open(target, "w:gz", format=tarfile.PAX_FORMAT) as out:
        out.addfile(head, io.BytesIO(data))
        for info, content in rest:
            out.addfile(info, io.BytesIO(content) if content is not None else None)
    return target


def listing(root: Path, *, live: bool = False) -> dict[str, bytes]:
    """Every file's bytes; a store's empty lock file (what any server on it creates) is
    not a change, nor (`live`) what a running server does to its own store."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() and not (
                live and p.name.startswith("tidings.sqlite3")) else b""
            for p in sorted(root.rglob("*")) if not p.name.endswith(".lock")}


def refused(tmp_path: Path, archive: Path, *words: str, force: bool = False,
             live: bool = False) -> None:
    """Restore into a fresh directory: refused naming `words`, nothing written."""
    fresh = tmp_path / "fresh"
    fresh.mkdir(exist_ok=True)
    before = listing(tmp_path, live=live)
    args = ["--config", str(tmp_path / "etc" / "tidings.toml"), "restore", str(archive)]
    done = tidings(fresh, *args, *(["--force"] if force else []), check=False)
    assert done.returncode != 0, done.stdout
    for word in words:
        assert word in done.stderr, done.stderr
    assert listing(tmp_path, live=live) == before
    assert not list(tmp_path.parent.glob(".tidings-restore-*"))
