"""Stage the SDK as the import package `tidings`: the renaming half of build.sh.

    python packaging/sdk/stage.py OUT        # writes OUT/tidings/ (OUT/tidings must not exist)

The SDK's source stays appliance/sdk, but its wheel must never install `appliance`: that
is the server's package, and one environment may hold both (issue 16 item 7).  So the
SDK and the modules of this repository it imports, found by following its imports (the
error root and the wire codec), are copied under new names:

    appliance.sdk[.x]   ->  tidings[.x]
    appliance[.x]       ->  tidings._shared[.x]   (its __init__: only __version__)

Only the module path of a ``from appliance... import ...`` statement changes, at the
token level: every other byte of every file is copied as it is.  The build fails (exit
status 1, one line on stderr naming the file) on a plain ``import appliance...``, a
relative import, an import outside the SDK's allowed set (tests/test_layering.py says
why it is small), and on any `appliance` name or dotted ``appliance.x`` path left in the
staged code, strings and comments included.  Standard library only.
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
SOURCE: Final = "appliance"
SDK: Final = "appliance.sdk"
TARGET: Final = "tidings"
SHARED: Final = "tidings._shared"
#: What the SDK may take from the rest of the repository: the package root (for
#: __version__), the error root and the sans-I/O codecs.  Anything else is a server part.
ALLOWED: Final = ("appliance.sdk", "appliance.protocol", "appliance.errors")
#: Files other than modules that travel with a staged package (PROTOCOL.md).
DATA_SUFFIXES: Final = (".md",)
#: A module path of the source package left anywhere in a staged file, prose included.
LEFTOVER: Final = re.compile(r"\bappliance\.[A-Za-z_]")


class StageError(Exception):
    """Why the SDK cannot be staged; the build stops."""


@dataclass(frozen=True, slots=True)
class Module:
    name: str  # dotted, in the repository (appliance.sdk.client)
    path: Path  # its file (a package's __init__.py)

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def is_source(name: str) -> bool:
    return name == SOURCE or name.startswith(SOURCE + ".")


def renamed(name: str) -> str:
    """The module's name in the wheel."""
    if name == SDK or name.startswith(SDK + "."):
        return TARGET + name[len(SDK):]
    if is_source(name):
        return SHARED + name[len(SOURCE):]
    raise StageError(f"{name}: not a module of {SOURCE}")


def find_module(name: str, root: Path = ROOT) -> Module | None:
    base = root.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return Module(name, path)
    return None


def imported_modules(module: Module, root: Path = ROOT) -> set[str]:
    """The repository modules `module` imports, anywhere in it (functions, TYPE_CHECKING)."""
    where = module.path.relative_to(root)
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.path.read_bytes(), str(where))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if is_source(alias.name):
                    raise StageError(f"{where}:{node.lineno}: `import {alias.name}`: "
                                     "only `from ... import` statements can be renamed")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise StageError(f"{where}:{node.lineno}: a relative import: "
                                 "use absolute ones, which the stager renames")
            if node.module is None or not is_source(node.module):
                continue
            found.add(node.module)
            for alias in node.names:  # `from appliance.protocol import wire`: a module too
                if find_module(f"{node.module}.{alias.name}", root) is not None:
                    found.add(f"{node.module}.{alias.name}")
                elif node.module == SOURCE and alias.name != "__version__":
                    raise StageError(f"{where}:{node.lineno}: `from {SOURCE} import "
                                     f"{alias.name}`: the package root ships only __version__")
    return found


def allowed(name: str) -> bool:
    return name == SOURCE or any(name == p or name.startswith(p + ".") for p in ALLOWED)


def sdk_closure(root: Path = ROOT) -> dict[str, Module]:
    """Every module of appliance/sdk, plus what they import from the repository, transitively."""
    todo = [SDK] + [f"{SDK}.{p.stem}" for p in sorted((root / "appliance" / "sdk").glob("*.py"))
                    if p.name != "__init__.py"]
    why: dict[str, str] = dict.fromkeys(todo, "the SDK")
    modules: dict[str, Module] = {}
    while todo:
        name = todo.pop()
        if name in modules:
            continue
        if not allowed(name):
            raise StageError(f"{why[name]} imports {name}: the SDK ships without the server "
                             f"(allowed: {', '.join(ALLOWED)})")
        module = find_module(name, root)
        if module is None:
            raise StageError(f"{why[name]} imports {name}, which is not in {root}")
        modules[name] = module
        parents = [name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)]
        # The root is not copied (stage() writes its version alone): nor are its imports.
        imports = imported_modules(module, root) if name != SOURCE else set()
        for other in sorted(imports) + parents:
            why.setdefault(other, name)
            todo.append(other)
    return modules


def rewrite(source: str, where: str) -> str:
    """`source` with the module path of each ``from appliance... import`` renamed."""
    tree = ast.parse(source, where)
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    starts = {tok.start: i for i, tok in enumerate(tokens)}
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []  # (row, first column, end column, text)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ImportFrom) and node.module and is_source(node.module)):
            continue
        # Import statements start after indentation only: ast's byte column is the
        # token's character column.
        i = starts.get((node.lineno, node.col_offset))
        if i is None or tokens[i].string != "from":
            raise StageError(f"{where}:{node.lineno}: cannot find this import's tokens")
        first = last = i + 1
        while (tokens[last + 1].string == "." and tokens[last + 2].type == tokenize.NAME):
            last += 2
        path = tokens[first:last + 1]
        if ("".join(tok.string for tok in path) != node.module
                or path[0].start[0] != path[-1].end[0]):
            raise StageError(f"{where}:{node.lineno}: write `from {node.module} import` "
                             "on one line, without spaces in the module path")
        edits.append((path[0].start[0], path[0].start[1], path[-1].end[1],
                      renamed(node.module)))
    for row, begin, end, text in sorted(edits, reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:begin] + text + line[end:]
    return "".join(lines)


def check_staged(text: str, where: str, staged: set[str]) -> None:
    """Fail unless `text` imports only staged modules and names no `appliance` module."""
    for node in ast.walk(ast.parse(text, where)):
        if isinstance(node, ast.Constant) and node.value == SOURCE:  # __import__("appliance")
            raise StageError(f"{where}:{node.lineno}: the string {SOURCE!r} after staging")
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            if is_source(name) or ((name == TARGET or name.startswith(TARGET + "."))
                                   and name not in staged):
                raise StageError(f"{where}:{node.lineno}: imports {name} after staging")
    code = [tok for tok in tokenize.generate_tokens(io.StringIO(text).readline)
            if tok.type == tokenize.NAME and tok.string == SOURCE]
    if code:
        raise StageError(f"{where}:{code[0].start[0]}: the name `{SOURCE}` after staging")
    leftover = LEFTOVER.search(text)
    if leftover:
        row = text.count("\n", 0, leftover.start()) + 1
        raise StageError(f"{where}:{row}: names a module of {SOURCE} ({leftover[0]}...): "
                         "the wheel has none; name the file instead")


def version(root: Path = ROOT) -> str:
    """appliance.__version__ as written (its first assignment stays a literal)."""
    tree = ast.parse((root / "appliance" / "__init__.py").read_bytes())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "__version__"
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise StageError("appliance/__init__.py: no literal __version__")


def stage(out: Path, root: Path = ROOT) -> list[Path]:
    """Write out/tidings/; returns the files written."""
    if (out / TARGET).exists():
        raise StageError(f"{out / TARGET} exists already")
    modules = sdk_closure(root)
    if f"{SDK}._shared" in modules or find_module(f"{SDK}._shared", root) is not None:
        raise StageError(f"{SDK}._shared would collide with the staged {SHARED}")
    staged = {renamed(name) for name in modules}
    files: dict[Path, str] = {}
    for name, module in sorted(modules.items()):
        parts = renamed(name).split(".")
        dest = out.joinpath(*parts, "__init__.py") if module.is_package else \
            out.joinpath(*parts[:-1], parts[-1] + ".py")
        if name == SOURCE:  # the server's root module: its version is all the SDK takes
            files[dest] = (f'"""Parts of the Tidings server the SDK shares: the wire codec '
                           f'and the error root."""\n\n__version__ = "{version(root)}"\n')
            continue
        where = str(module.path.relative_to(root))
        files[dest] = rewrite(module.path.read_text(encoding="utf-8"), where)
        check_staged(files[dest], where, staged)
        if module.is_package:
            for data in sorted(module.path.parent.iterdir()):
                if data.suffix in DATA_SUFFIXES:
                    files[dest.parent / data.name] = data.read_text(encoding="utf-8")
    files[out / TARGET / "py.typed"] = ""  # PEP 561: the types ship with the code
    for dest, text in files.items():
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
    return sorted(files)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python packaging/sdk/stage.py OUT", file=sys.stderr)
        return 2
    try:
        written = stage(Path(argv[0]))
    except (StageError, SyntaxError, OSError, UnicodeDecodeError) as exc:
        print(f"stage.py: {exc}", file=sys.stderr)
        return 1
    print(f"staged {len(written)} files into {Path(argv[0]) / TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
