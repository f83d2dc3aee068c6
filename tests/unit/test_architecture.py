"""The layout's rules, read from the source (AST), so the architecture cannot drift back:

- no import cycle among devserve's modules, counting the imports made inside functions
  (only those under ``if TYPE_CHECKING:`` are left out: they never run);
- the addons platform (what addon code and the served app import) never reaches the engine
  (the servers, the reloader, the watcher, the composition root), not even through another
  module;
- only the composition root (``runtime``) imports both the engine and the addons platform
  (``cli`` imports the root, and the platform for the commands that scaffold and run addon
  commands, never the engine);
- the prefork master knows no kind of child by name: it imports neither cron nor gevent;
- no module over 600 lines; ``cli.py`` under 400.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import devserve

PACKAGE = Path(devserve.__file__).resolve().parent
MAX_LINES = 600
MAX_CLI_LINES = 400

# What addon code and the served app import, and what they need.
PLATFORM = {
    "devserve.addon_commands",
    "devserve.addons",
    "devserve.app",
    "devserve.cache",
    "devserve.cron",
    "devserve.http",
    "devserve.jsonrpc",
    "devserve.rpc",
    "devserve.scaffold",
    "devserve.wsgi",
}
# Serving, reloading, watching: the design card's top-level files and the private package.
ENGINE_MODULES = {
    "devserve.reloader",
    "devserve.servers",
    "devserve.watcher",
    "devserve.watching",
}
# The composition root and the commands in front of it.
ENTRY_POINTS = {"devserve.runtime", "devserve.cli"}


def is_engine(module: str) -> bool:
    return module in ENGINE_MODULES or module.startswith("devserve._engine")


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


MODULES = module_files()


def _under_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(node: ast.AST, package: str) -> Iterator[str]:
    """The devserve modules one import statement names (``from devserve import app``
    names the module ``devserve.app``; ``from devserve import run``, the package)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parts, *([node.module] if node.module else [])])
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            yield candidate if candidate in MODULES else base


def imports_of(module: str) -> set[str]:
    """Every devserve module ``module`` imports, at its top or inside a function."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _under_type_checking(node):
            for other in node.orelse:
                visit(other)
            return
        found.update(name for name in _imported_names(node, package) if name in MODULES)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(module)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def reachable(start: str) -> dict[str, list[str]]:
    """Every module ``start`` imports, directly or not, with one chain of imports to it."""
    chains: dict[str, list[str]] = {start: [start]}
    pending = [start]
    while pending:
        current = pending.pop()
        for imported in sorted(GRAPH[current]):
            if imported not in chains:
                chains[imported] = [*chains[current], imported]
                pending.append(imported)
    del chains[start]
    return chains


def cycles() -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in sorted(GRAPH[module]):
            if imported not in index:
                connect(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(GRAPH):
        if module not in index:
            connect(module)
    return found


# --- the rules ---


def test_the_analysis_sees_imports_made_inside_functions() -> None:
    """The runtime imports each mode's module inside a function: the graph must see it."""
    assert "devserve._engine.threaded" in GRAPH["devserve.runtime"]
    assert "devserve._engine.prefork" in GRAPH["devserve.runtime"]
    assert "devserve.runtime" in GRAPH["devserve"]  # devserve.run(), a lazy import


def test_no_import_cycle() -> None:
    assert cycles() == []


@pytest.mark.parametrize("module", sorted(PLATFORM))
def test_the_addons_platform_never_reaches_the_engine(module: str) -> None:
    reached = {
        name: chain
        for name, chain in reachable(module).items()
        if is_engine(name) or name in ENTRY_POINTS
    }
    assert reached == {}, " ; ".join(" -> ".join(chain) for chain in reached.values())


def test_only_the_composition_root_imports_both_engine_and_platform() -> None:
    both = [
        module
        for module, imported in GRAPH.items()
        if any(is_engine(name) for name in imported) and imported & PLATFORM
    ]
    assert both == ["devserve.runtime"]


def test_the_prefork_master_knows_no_kind_of_child() -> None:
    imported = reachable("devserve._engine.prefork")
    for kind in ("devserve.cron", "devserve._engine.cron_workers", "devserve._engine.gevent"):
        assert kind not in imported, " -> ".join(imported[kind])
    assert "devserve._engine.evented_child" not in imported


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_600_lines(module: str) -> None:
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines: split it"


def test_cli_stays_commands_and_dispatch() -> None:
    lines = len(MODULES["devserve.cli"].read_text(encoding="utf-8").splitlines())
    assert lines < MAX_CLI_LINES
