"""Which of the project's files import torch or transformers, and whether that import runs on import.

A session whose venv lacks a library stops before any spec only when the project imports it
at module level: then every spec fails alike with `No module named ...`. An import inside a
function (loading pretrained weights that training never reaches) or under `try/except
ImportError` may never run, so it earns one line, never a stop. Standard library only: this
runs in nox's own environment.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# What an `except` must catch for the import above it to be optional.
GUARDS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


@dataclass(frozen=True)
class Importer:
    """The first file that imports a library, the line, and whether importing that file runs the import."""

    path: str
    line: int
    at_module_level: bool

    def describe(self, name: str) -> str:
        where = "" if self.at_module_level else " only inside a function or under try/except ImportError"
        return f"{self.path}:{self.line} imports {name}{where}"


def project_files(root: Path) -> list[Path]:
    """The Python files git tracks or would track (every .py outside hidden folders when `root` is not a
    git checkout), so ignored venvs and build folders beside the code do not count."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "*.py"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\0")
        return sorted(root / name for name in listed if name)
    except (OSError, subprocess.CalledProcessError):
        return sorted(
            path
            for path in root.rglob("*.py")
            if not any(part.startswith(".") for part in path.relative_to(root).parts)
        )


def importers(root: Path, names: list[str]) -> dict[str, Importer]:
    """For each library in `names`, the first project file that imports it at module level, else the first
    that imports it at all."""
    quick = re.compile(rf"^[ \t]*(?:import|from)[ \t]+({'|'.join(map(re.escape, names))})\b", re.MULTILINE)
    found: dict[str, Importer] = {}
    for path in project_files(root):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if not quick.search(text):
            continue
        relative = str(path.relative_to(root))
        for name, line, runs in imports_of(text, names):
            held = found.get(name)
            if held is None or (runs and not held.at_module_level):
                found[name] = Importer(relative, line, runs)
        if len(found) == len(names) and all(i.at_module_level for i in found.values()):
            break
    return found


def imports_of(text: str, names: list[str]) -> Iterator[tuple[str, int, bool]]:
    """(library, line, runs when the file is imported) for each import of one of `names` in a file's text.
    A file that does not parse counts each import line as running (as Python would fail on it anyway)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        for number, line in enumerate(text.splitlines(), 1):
            words = line.split()
            if len(words) > 1 and words[0] in ("import", "from") and (name := _library(words[1], names)):
                yield name, number, True
        return
    yield from _walk(tree.body, names, runs=True)


def _walk(body: list[ast.stmt], names: list[str], runs: bool) -> Iterator[tuple[str, int, bool]]:
    for node in body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if name := _library(alias.name, names):
                    yield name, node.lineno, runs
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and (name := _library(node.module, names)):
                yield name, node.lineno, runs
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _walk(node.body, names, runs=False)
        elif isinstance(node, (ast.Try, ast.TryStar)):
            guarded = any(_catches_import_error(handler) for handler in node.handlers)
            yield from _walk(node.body, names, runs and not guarded)
            for handler in node.handlers:
                yield from _walk(handler.body, names, runs)
            yield from _walk(node.orelse + node.finalbody, names, runs)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.body, names, runs=False)  # never true at run time
            yield from _walk(node.orelse, names, runs)
        else:
            # Class bodies, module-level if/for/with blocks: they run when the module is imported.
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                    yield from _walk(inner, names, runs)
            for case in getattr(node, "cases", []):
                yield from _walk(case.body, names, runs)


def _library(module: str, names: list[str]) -> str | None:
    top = module.split(".", 1)[0]
    return top if top in names else None


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(
        (isinstance(c, ast.Name) and c.id in GUARDS) or (isinstance(c, ast.Attribute) and c.attr in GUARDS)
        for c in caught
    )


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )
