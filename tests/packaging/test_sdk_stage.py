"""packaging/sdk/stage.py: the SDK staged as `tidings`, and every way to leave `appliance` in it.

The hostile cases run on a small repository written into tmp_path (its own
appliance/sdk); the last tests stage this repository's real SDK and type-check it.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGE_PY = REPO / "packaging" / "sdk" / "stage.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sdk_stage", STAGE_PY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


stage_py = _load()


def _repo(tmp_path: Path, files: dict[str, str]) -> Path:
    """A repository root with `files` (paths under it) plus the minimum a stage needs."""
    root = tmp_path / "repo"
    base = {
        "appliance/__init__.py": '__version__ = "9.8.7"\n__version__ = __version__ or "x"\n',
        "appliance/errors.py": "class ApplianceError(Exception): ...\n",
        "appliance/sdk/__init__.py": "from appliance.sdk.client import Client\n",
        "appliance/sdk/client.py": "from appliance.errors import ApplianceError\n"
                                   "class Client(ApplianceError): ...\n",
    }
    for name, text in {**base, **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def _refused(tmp_path: Path, files: dict[str, str], match: str) -> None:
    root = _repo(tmp_path, files)
    with pytest.raises(stage_py.StageError, match=match):
        stage_py.stage(tmp_path / "out", root)
    assert not (tmp_path / "out" / "tidings").exists()  # nothing half-written


def test_renames_every_import_form_and_follows_them(tmp_path: Path) -> None:
    root = _repo(tmp_path, {
        "appliance/protocol/__init__.py": '"""Codecs."""\n',
        "appliance/protocol/wire/__init__.py": "from appliance.protocol.wire.frames import X\n",
        "appliance/protocol/wire/frames.py": "X = 1\n",
        "appliance/protocol/wire/PROTOCOL.md": "# the wire\n",
        "appliance/protocol/unused.py": "Y = 2\n",  # not imported: not shipped
        "appliance/sdk/client.py": '''
            from typing import TYPE_CHECKING

            from appliance import __version__
            from appliance.errors import ApplianceError
            from appliance.protocol import wire  # a module named in the names

            if TYPE_CHECKING:
                from appliance.sdk.other import Other

            class Client(ApplianceError):
                def f(self) -> None:
                    from appliance.sdk.other import (
                        Other,
                    )
                    print(__version__, wire.X, Other, "from appliance import nothing")
            ''',
        "appliance/sdk/other.py": "class Other: ...\n",
    })
    written = stage_py.stage(tmp_path / "out", root)
    tree = tmp_path / "out" / "tidings"
    assert {p.relative_to(tree).as_posix() for p in written} == {
        "__init__.py", "client.py", "other.py", "py.typed", "_shared/__init__.py",
        "_shared/errors.py", "_shared/protocol/__init__.py",
        "_shared/protocol/wire/__init__.py", "_shared/protocol/wire/frames.py",
        "_shared/protocol/wire/PROTOCOL.md"}
    client = (tree / "client.py").read_text()
    for line in ("from tidings._shared import __version__",
                 "from tidings._shared.errors import ApplianceError",
                 "from tidings._shared.protocol import wire  # a module named in the names",
                 "    from tidings.other import Other",
                 "        from tidings.other import ("):
        assert line + "\n" in client
    assert '"from appliance import nothing"' in client  # a string is not an import
    assert (tree / "_shared" / "__init__.py").read_text().endswith('__version__ = "9.8.7"\n')
    # The staged tree runs on its own: `appliance` is not importable from there.
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "import tidings.client as c, importlib.util; c.Client().f(); "
         "print(importlib.util.find_spec('appliance'))", str(tmp_path / "out")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["9.8.7", "1", "<class", "'tidings.other.Other'>",
                                     "from", "appliance", "import", "nothing", "None"]


@pytest.mark.parametrize(("files", "match"), [
    ({"appliance/engine/__init__.py": "", "appliance/sdk/client.py":
      "from appliance.engine import x\n"}, r"client imports appliance\.engine"),
    # Reached through an allowed module: the chain is named.
    ({"appliance/storage.py": "", "appliance/protocol/__init__.py": "",
      "appliance/protocol/codec.py": "from appliance.storage import db\n",
      "appliance/sdk/client.py": "from appliance.protocol.codec import c\n"},
     r"appliance\.protocol\.codec imports appliance\.storage"),
    ({"appliance/sdk/client.py": "import appliance.errors\n"}, r"`import appliance\.errors`"),
    ({"appliance/sdk/client.py": "def f():\n    import appliance\n"}, r"`import appliance`"),
    ({"appliance/sdk/client.py": "from . import other\n"}, "a relative import"),
    ({"appliance/sdk/client.py": "from appliance import RELEASE_VERSION_FILE\n"},
     "ships only __version__"),
    ({"appliance/sdk/client.py": "from appliance.sdk.nothing import x\n"},
     r"imports appliance\.sdk\.nothing, which is not in"),
    ({"appliance/sdk/client.py": "from appliance.sdk \\\n    .other import x\n",
      "appliance/sdk/other.py": "x = 1\n"}, "on one line"),
    # What the rewriter does not touch must not name the package either.
    ({"appliance/sdk/client.py": 'import logging\nlog = logging.getLogger("appliance.sdk")\n'},
     r"client\.py:2: names a module of appliance \(appliance\.s"),
    ({"appliance/sdk/client.py": "# see appliance.protocol.wire\n"}, "names a module"),
    ({"appliance/sdk/client.py": 'mod = __import__("appliance")\n'}, "the string 'appliance'"),
    ({"appliance/sdk/client.py": "appliance = 1\n"}, "the name `appliance`"),
    ({"appliance/sdk/_shared.py": ""}, "would collide"),
    ({"appliance/__init__.py": "__version__ = compute()\n"}, "no literal __version__"),
])
def test_refuses(tmp_path: Path, files: dict[str, str], match: str) -> None:
    _refused(tmp_path, files, match)


def test_the_command_line_fails_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "tidings").mkdir(parents=True)  # a stale stage is never mixed into a new one
    result = subprocess.run([sys.executable, str(STAGE_PY), str(out)], capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"stage.py: {out / 'tidings'} exists already\n"
    assert subprocess.run([sys.executable, str(STAGE_PY)], capture_output=True,
                          timeout=60).returncode == 2


def test_the_real_sdk_stages_with_only_its_imports_changed(tmp_path: Path) -> None:
    written = stage_py.stage(tmp_path, REPO)
    tree = tmp_path / "tidings"
    sdk = sorted(p.name for p in (REPO / "appliance" / "sdk").glob("*.py"))
    assert sorted(p.name for p in tree.glob("*.py")) == sdk
    shared = {p.relative_to(tree / "_shared").as_posix() for p in written
              if p.is_relative_to(tree / "_shared")}
    assert {"errors.py", "protocol/wire/frames.py", "protocol/wire/PROTOCOL.md"} <= shared
    # No server part rides along: only the codec, the error root and the version.
    assert all(name == "__init__.py" or name == "errors.py" or name.startswith("protocol/")
               for name in shared), shared
    for path in written:
        if path.suffix != ".py" or path == tree / "_shared" / "__init__.py":  # written, not copied
            continue
        rel = path.relative_to(tree)
        source = REPO / "appliance" / ("sdk" / rel if rel.parts[0] != "_shared"
                                       else Path(*rel.parts[1:]))
        changed = [line for line in difflib.ndiff(source.read_text().splitlines(),
                                                  path.read_text().splitlines())
                   if line.startswith(("- ", "+ "))]
        # Every changed line is an import's module path, before and after.
        assert all(line[2:].lstrip().startswith(("from appliance.", "from appliance ")
                                                if line[0] == "-" else "from tidings")
                   for line in changed), (rel, changed)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] != "appliance", (rel, node.module)


def test_the_staged_sdk_type_checks_strictly(tmp_path: Path) -> None:
    stage_py.stage(tmp_path, REPO)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-version",
         "3.11", "-p", "tidings"], cwd=tmp_path,
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith("Success: no issues found")
