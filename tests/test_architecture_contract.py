"""The house's shape: no import cycles among the package's modules, imports inside functions
counted (the layer contract itself is `lint-imports`, run by CI; see docs/architecture.md)."""

from __future__ import annotations

import grimp


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle's members."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.find_modules_directly_imported_by(v) & modules):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.find_modules_directly_imported_by(v):
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def _package_graph() -> tuple[grimp.ImportGraph, set[str]]:
    graph = grimp.build_graph("cnnreport", exclude_type_checking_imports=True)
    # A package's __init__ re-exporting its modules is not a dependency between stages.
    modules = {m for m in graph.modules if m != "cnnreport"}
    return graph, modules


def test_no_import_cycles_among_project_modules() -> None:
    graph, modules = _package_graph()
    assert len(modules) > 30  # the whole package was read, not an empty graph
    assert _cycles(graph, modules) == []


def test_imports_inside_functions_are_seen() -> None:
    # The check above means something only if a function's own import counts as an edge:
    # the CLI imports the pipeline inside a function body (lazily, for --help's speed).
    graph, _ = _package_graph()
    assert "cnnreport.report.pipeline" in graph.find_modules_directly_imported_by("cnnreport.cli.runs")


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = grimp.ImportGraph()
    for m in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(m)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph, {"p.a", "p.b", "p.c"}) == [["p.a", "p.b", "p.c"]]
