"""The edge package's shape: no import circle, and one owner per field.

Parsed from the source (every ``import``, including function-level and
``TYPE_CHECKING`` ones), so a circle cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tako_server.edge.lifecycle import ExchangeState

EDGE = Path(__file__).resolve().parents[3] / "tako_server" / "edge"
PACKAGE = "tako_server.edge"
REQUEST_PATH = ("exchange", "proxy", "http1", "upstream", "staticsend", "runtime")


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), filename=str(p)) for p in EDGE.glob("*.py")}


def _edge_imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """Edge modules ``name`` imports (``__init__`` stands for the package itself)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module
            elif node.level == 0 and node.module and node.module.startswith(PACKAGE):
                base = node.module[len(PACKAGE) + 1 :] or None
            else:
                continue
            if base is None:  # from . import x, y: submodules (or the package's names)
                found.update(a.name if a.name in known else "__init__" for a in node.names)
            else:
                found.add(base.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    found.add(alias.name[len(PACKAGE) + 1 :].split(".")[0])
    found.discard(name)
    return found & known


def _graph() -> dict[str, set[str]]:
    trees = _modules()
    known = set(trees)
    return {name: _edge_imports(name, tree, known) for name, tree in trees.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_cycle_finder_reports_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_parser_sees_lazy_and_type_only_imports() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .b import B\n"
        "def f():\n    from tako_server.edge.c import C\n    import tako_server.edge.d\n"
        "from . import e\n"
    )
    assert _edge_imports("a", tree, {"a", "b", "c", "d", "e"}) == {"b", "c", "d", "e"}


def test_edge_module_graph_is_acyclic() -> None:
    graph = _graph()
    assert {"exchange", "http1", "upstream", "decide", "lifecycle"} <= set(graph)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_pure_cores_import_no_shell() -> None:
    graph = _graph()
    shells = {"exchange", "proxy", "http1", "upstream", "staticsend", "runtime", "server"}
    cores = ("decide", "lifecycle", "links", "policy", "static", "snapshot", "activity")
    for core in (*cores, "hooks", "messages"):
        assert not graph[core] & shells, (core, graph[core] & shells)


def _foreign_writes(tree: ast.Module) -> list[str]:
    """``x.attr = ...`` targets where ``x`` is not ``self``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        for target in targets:
            for item in target.elts if isinstance(target, ast.Tuple) else [target]:
                if isinstance(item, ast.Attribute) and not (
                    isinstance(item.value, ast.Name) and item.value.id == "self"
                ):
                    found.append(ast.unparse(item))
    return sorted(found)


def test_request_path_writes_no_other_objects_fields() -> None:
    """Shells call each other's methods; the only outside writes are the pool's own
    bookkeeping on the connections it holds (same module, same owner)."""
    trees = _modules()
    writes = {name: _foreign_writes(trees[name]) for name in REQUEST_PATH}
    assert writes == {
        "exchange": [],
        "proxy": [],
        "http1": [],
        "upstream": ["conn.ex", "conn.out", "conn.reused"],
        "staticsend": [],
        "runtime": [],
    }


def test_no_shell_touches_another_transport() -> None:
    for name in REQUEST_PATH:
        for node in ast.walk(_modules()[name]):
            if isinstance(node, ast.Attribute) and node.attr == "transport":
                owner = node.value
                assert isinstance(owner, ast.Name) and owner.id == "self", (
                    f"{name}.py:{node.lineno}: {ast.unparse(node)}"
                )


def test_exchange_shells_never_assign_the_state_fields() -> None:
    """Only :mod:`.lifecycle` changes keep-alive, finish and response progress."""
    fields = set(ExchangeState.__slots__)
    for name in ("exchange", "proxy"):
        for node in ast.walk(_modules()[name]):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                assert node.attr not in fields, f"{name}.py:{node.lineno}: {node.attr}"
