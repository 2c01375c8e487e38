"""The project's import graph has no cycle, counting imports inside functions too, and its
dependencies point one way (docs/ARCHITECTURE.md).

Built with `ast` from the source, so an import that only runs when a function is called (the
usual way a cycle hides) counts like one at the top of a module. Not counted: imports under
`if TYPE_CHECKING:` (they never run). Counted besides the written imports: importing `a.b.c`
runs the `__init__` of `a` and `a.b`, and the scorer registry imports every module of its
package (pkgutil) to collect the scorer classes.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from orchestration.paths import REPO_ROOT

PACKAGES = ("rglcd", "trainer", "reward_service", "orchestration")
# Imports made by name at run time, invisible to ast: importer -> package whose modules it loads.
DYNAMIC = {"reward_service.scorers.registry": "reward_service.scorers"}
# Package -> project packages it must never import (dependencies point one way).
FORBIDDEN = {
    "rglcd": ("trainer", "reward_service", "orchestration"),
    "reward_service": ("trainer", "orchestration"),
    "trainer": ("orchestration",),
}
# Applications: their modules are run, never imported from outside their own package.
APPS = ("orchestration.commands", "orchestration.studies", "orchestration.bench", "trainer.run")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node, at any depth, outside `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _imports_of(child))
            continue
        yield from _imports_of(node)


def _imports_of(node: ast.AST):
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _imports(node)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the importer's package upwards
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


@cache
def import_graph() -> dict[str, dict[str, str]]:
    """module -> {imported project module: "file:line" of the import}."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, str]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        where = path.relative_to(REPO_ROOT)
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _targets(node, module, path.name == "__init__.py"):
                found = resolve(target)
                parts = found.split(".") if found else []
                # The module itself and its parent packages' __init__ (already running).
                for i in range(1, len(parts) + 1):
                    name = ".".join(parts[:i])
                    if name != module and not module.startswith(name + "."):
                        edges.setdefault(name, f"{where}:{node.lineno}")
        if module in DYNAMIC:
            prefix = DYNAMIC[module] + "."
            for other in modules:
                if other.startswith(prefix) and other != module:
                    edges.setdefault(other, f"{where} (imports its package's modules by name)")
    return graph


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.get(child, {}))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycles_are_found_in_a_made_up_graph():
    graph = {"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}, "d": {"a": ""}, "e": {}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b": ""}, "b": {}}) == []


def test_the_graph_sees_imports_inside_functions_and_parent_packages():
    graph = import_graph()
    assert "reward_service.scorers.registry" in graph["reward_service.config"]
    assert "reward_service.scorers" in graph["reward_service.config"]  # its __init__ runs
    assert "reward_service.scorers.toy" in graph["reward_service.scorers.registry"]
    assert len(graph) > 100


def test_no_import_cycle():
    graph = import_graph()
    problems = []
    for component in cycles(graph):
        members = set(component)
        edges = [f"    {a} -> {b} ({graph[a][b]})"
                 for a in component for b in sorted(graph[a]) if b in members]
        problems.append(f"cycle among {component}:\n" + "\n".join(edges))
    assert not problems, "\n".join(problems)


def test_dependencies_point_one_way_and_apps_are_not_imported():
    problems = []
    for module, edges in import_graph().items():
        top = module.split(".")[0]
        for target, where in edges.items():
            if target.split(".")[0] in FORBIDDEN.get(top, ()):
                problems.append(f"{module} imports {target} ({where})")
            for app in APPS:
                inside = module == app or module.startswith(app + ".")
                if (target == app or target.startswith(app + ".")) and not inside:
                    problems.append(f"{module} imports the application {target} ({where})")
    assert not problems, "\n".join(problems)


def test_imports_inside_functions_say_why():
    # An import of a project module inside a function defers a heavy or optional library and
    # says which (`# deferred: loads diffusers`), on its line or the line above; any other
    # import of a project module goes at the top of its module.
    problems = []
    for path in _modules().values():
        lines = path.read_text(encoding="utf-8").splitlines()
        for function in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                    node.module or ""]
                if not any(name.split(".")[0] in PACKAGES for name in names):
                    continue
                around = lines[node.lineno - 2 : node.end_lineno]
                if not any("#" in line for line in around):
                    where = path.relative_to(REPO_ROOT)
                    problems.append(f"{where}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not problems, "move to the top, or say what it defers:\n" + "\n".join(problems)
