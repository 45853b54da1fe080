"""The shape of the code base, held as tests: module sizes, layers, import cycles, typed hand-offs.

``python -m tests.unit.test_structure [ROOT]`` prints the numbers these tests hold
(for a checkout at ROOT, default this one).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from tests.conftest import REPO

MAX_LINES = 500
# Mappings annotated as free-form (`dict[str, Any]` and the like). What remains
# should be true free-form mappings (params, metrics, JSON documents); the
# budget only goes down.
FREE_FORM_BUDGET = 65
FREE_FORM = re.compile(r"(?:dict|Dict|Mapping)\[str,\s*(?:Any|object)\]")
# The Prefect layer: the CLI, the tasks and the flows. The library below it
# imports neither Prefect nor the flows.
PREFECT_LAYER = ("normlab.cli", "normlab.tasks", "normlab.flows")


def source_files(root: Path = REPO) -> dict[str, Path]:
    """Every installed module, by the dotted name it installs as."""
    found: dict[str, Path] = {}
    for base, name in (("normlab", "normlab"), ("tasks", "normlab.tasks"), ("flows", "normlab.flows")):
        for path in sorted((root / base).glob("**/*.py")):
            parts = list(path.relative_to(root / base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([name, *parts])] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_imports(path: Path, name: str, modules: set[str], *, top_level: bool = True) -> set[str]:
    """The project modules ``path`` imports (module level only, unless ``top_level`` is false)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def walk(body: list[ast.stmt]):
        for node in body:
            if isinstance(node, ast.If) and _is_type_checking(node):
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, field, []):
                        yield from walk(child.body if isinstance(child, ast.ExceptHandler) else [child])
            elif not top_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield from walk(node.body)

    found: set[str] = set()
    for node in walk(tree.body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """Who imports whom, counting imports inside functions too (a deferred import still ties two modules)."""
    files = source_files(root)
    names = set(files)
    return {name: module_imports(path, name, names, top_level=False) for name, path in files.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def in_layer(name: str, layer: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in layer)


def prefect_imports(root: Path = REPO) -> dict[str, list[str]]:
    """Library modules (outside the Prefect layer) that import Prefect or the flows, anywhere in the file."""
    offenders: dict[str, list[str]] = {}
    for name, path in source_files(root).items():
        if in_layer(name, PREFECT_LAYER):
            continue
        hits = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                hits += [a.name for a in node.names if a.name.split(".")[0] == "prefect"]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                if node.module.split(".")[0] == "prefect" or in_layer(node.module, ("normlab.flows", "normlab.tasks")):
                    hits.append(node.module)
        if hits:
            offenders[name] = hits
    return offenders


def line_counts(root: Path = REPO) -> dict[str, int]:
    return {name: len(path.read_text().splitlines()) for name, path in source_files(root).items()}


def free_form_count(root: Path = REPO) -> int:
    return sum(len(FREE_FORM.findall(path.read_text())) for path in source_files(root).values())


def local_import_count(root: Path = REPO) -> int:
    files = source_files(root)
    names = set(files)
    return sum(
        len(module_imports(path, name, names, top_level=False) - module_imports(path, name, names))
        for name, path in files.items()
    )


def test_every_module_is_at_most_500_lines():
    long = {name: n for name, n in line_counts().items() if n > MAX_LINES}
    assert not long, f"split by role: {long}"


def test_no_import_cycles():
    assert import_cycles(import_graph()) == []


def test_the_library_imports_neither_prefect_nor_the_flows():
    assert prefect_imports() == {}


def test_free_form_mappings_stay_within_budget():
    assert free_form_count() <= FREE_FORM_BUDGET


def test_the_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def main(root: Path) -> None:
    counts = line_counts(root)
    largest = max(counts, key=counts.get)
    print(f"modules: {len(counts)}; largest: {largest} ({counts[largest]} lines); "
          f"over {MAX_LINES}: {sum(n > MAX_LINES for n in counts.values())}")
    print(f"free-form mapping annotations: {free_form_count(root)}")
    print(f"import cycles: {import_cycles(import_graph(root))}")
    print(f"function-local project imports: {local_import_count(root)}")
    print(f"library modules importing Prefect or the flows: {sorted(prefect_imports(root))}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO)
