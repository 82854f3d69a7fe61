"""The package's import graph has no circles: data flows CLI -> config -> typed specs -> objects,
and nothing imports upward (imports inside functions count too: a circle held apart by a late
import is still one). Imports inside functions are kept only where they keep `--help` from
loading torch."""

from __future__ import annotations

import ast
import re

from tests.conftest import REPO

PACKAGE = REPO / "gpt2tasks"


def module_name(path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def import_graph(top_level_only: bool) -> dict[str, set[str]]:
    """gpt2tasks module -> the gpt2tasks modules it imports (a package's own __init__ not counted
    for its submodules; TYPE_CHECKING blocks never run)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        nodes = tree.body if top_level_only else ast.walk(tree)
        found = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        graph[name] = {m for m in found & set(modules) if m != name and m != "gpt2tasks" and not name.startswith(m + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        for dep in sorted(graph[node]):
            if dep in path:
                found.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node, [node])
    return found


def test_no_import_circles_among_gpt2tasks_modules():
    for top_level_only in (True, False):
        graph = import_graph(top_level_only)
        assert "gpt2tasks.build" in graph and graph["gpt2tasks.build"]  # the parser sees the imports
        assert cycles(graph) == [], f"import circles ({'top-level' if top_level_only else 'any'} imports)"


def test_config_its_keys_and_the_task_list_import_nothing_that_builds():
    graph = import_graph(top_level_only=False)
    for low in ("gpt2tasks.config", "gpt2tasks.keys", "gpt2tasks.multitask"):
        assert not graph[low] & {"gpt2tasks.build", "gpt2tasks.train", "gpt2tasks.export", "gpt2tasks.evaluation"}, low


def test_the_design_module_map_names_every_module():
    """docs/design.md's module map lists every module (a package's files on its own lines), so the
    map cannot drift from the code: a new module fails here until it is described."""
    design = (REPO / "docs" / "design.md").read_text()
    block = design.split("## Module map", 1)[1].split("```", 2)[1]
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py" and len(path.read_text().splitlines()) <= 1:
            continue  # a package docstring only
        package = path.parent.relative_to(PACKAGE).as_posix()
        # top-level modules: their own line; a subpackage's files: within that package's lines
        entry = re.search(rf"^  {re.escape(package)}/.*(?:\n {{3,}}.*)*", block, re.M) if package != "." else None
        where = block if package == "." else entry.group(0) if entry else ""
        if path.name not in where:
            missing.append(path.relative_to(PACKAGE).as_posix())
    assert missing == []
