"""The package's architecture, read from its imports so it cannot rot: every import points down the layers, none
is part of a cycle, and the package stays small enough to read (few top-level modules, none over 400 lines).

Each top-level module or sub-package of harness/ is one node; imports inside functions count as much as those at
the top of a file. A new module gets a place in LAYERS (or joins a sub-package); an import that would run upwards
is fixed by moving the code it needs down, not by reordering the list.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[2] / "harness"

# Top to bottom. A node may import only nodes below it.
LAYERS = [
    "__main__",  # python -m harness
    "cli",  # argument parsing and the list, validate, plan and run commands
    "commands",  # the other subcommands: schema, report, init, perplexity, serve, baseline
    "project",  # the adopting project: [tool.trainspec] settings, nox sessions, scaffold, JSON Schema
    "plugin",  # the pytest plugin: collection, the xdist controller and its scheduling
    "history",  # the run history: the store, drift, flaky, bisect; the controller and the command line use it
    "runner",  # one spec run end to end: stages, peaks, the record
    "planning",  # tiers, run order, --changed-since/--skip-unchanged selection, concurrency
    "context",  # the run context every worker gets
    "inference",  # the inference stage: server, perplexity
    "checks",  # checks after a run, fail-fast while it runs, the baseline comparison
    "backends",  # where a run's processes go: local, Slurm
    "report",  # summaries, the HTML report, progress
    "rundir",  # one live run per run directory
    "repo_writes",  # the proof a run did not write into the repository
    "devices",  # visible devices, vendor tools, GPU memory, leases
    "caches",  # where caches live; durations and peaks kept between runs
    "records",  # results.json: the records of a run and reading them back
    "logs",  # training log formats and the store that follows them
    "process",  # a command in its own process group, ended whole
    "launch",  # a spec rendered into argv and environment
    "trace",  # what a child imported and read
    "terminal",  # what the harness prints
    "secrets",  # masking credentials
    "options",  # the run options, declared once
    "spec",  # the spec files: model, typed YAML, loading, rules
    "atomic",  # whole-file writes
    "__init__",  # the version
    "child_site",  # runs inside every child: imports nothing of the harness
]

MAX_TOP_LEVEL_MODULES = 16
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(HARNESS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def node_of(module: str) -> str:
    """harness.x.y -> x; the package itself is its __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def resolve(name: str) -> str:
    """The module an imported name lives in: harness.x.y when that is a module or package, else harness.x."""
    relative = Path(*name.split(".")[1:])
    return (
        name
        if (HARNESS / relative).is_dir() or (HARNESS / relative).with_suffix(".py").is_file()
        else name.rpartition(".")[0]
    )


def harness_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every harness module `path` imports, wherever the import statement is."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: a relative import; the harness imports absolutely"
            if node.module == "harness" or (node.module or "").startswith("harness."):
                found += [(node.lineno, resolve(f"{node.module}.{alias.name}")) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name == "harness" or a.name.startswith("harness.")]
    return found


MODULES = {module_name(p): p for p in sorted(HARNESS.rglob("*.py"))}
IMPORTS = {name: harness_imports(path) for name, path in MODULES.items()}


def test_every_node_has_a_layer_and_every_layer_a_node():
    nodes = {node_of(m) for m in MODULES}
    assert sorted(nodes - set(LAYERS)) == [], "new modules or sub-packages: give each its place in LAYERS"
    assert sorted(set(LAYERS) - nodes) == [], "LAYERS names what is gone"
    assert len(LAYERS) == len(set(LAYERS))


def test_every_import_points_down_the_layers():
    rank = {node: i for i, node in enumerate(LAYERS)}
    upward = [
        f"{MODULES[m].relative_to(HARNESS.parent)}:{line} imports {target} ({node_of(m)} is above {node_of(target)})"
        for m, imports in IMPORTS.items()
        for line, target in imports
        if node_of(target) != node_of(m) and rank[node_of(target)] <= rank[node_of(m)]
    ]
    assert upward == []


def test_no_module_imports_itself_back():
    graph = {m: {t for _, t in imports if t != m} for m, imports in IMPORTS.items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target] if target in path else [module, target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [module])
            assert cycle is None, "an import cycle: " + " -> ".join(cycle)


def test_the_top_level_stays_small():
    top = sorted(p.name for p in HARNESS.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules at harness/'s top level: {top}"


@pytest.mark.parametrize("path", sorted(HARNESS.rglob("*.py")), ids=lambda p: str(p.relative_to(HARNESS.parent)))
def test_no_module_is_over_400_lines(path: Path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{lines} lines: split it by concept"
