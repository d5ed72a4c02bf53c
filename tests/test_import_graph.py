"""No import cycle: the package's modules form a graph without loops (function-level imports too).

The graph is read from the source with :mod:`ast`, so a lazy import inside a function (the usual
way to hide a cycle) counts as an edge like a module-level one; imports under ``if TYPE_CHECKING:``
(annotations only, never run) do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import conformer_xai

PACKAGE = Path(conformer_xai.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block)
                       for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                           for alias in node.names]
            for target in targets:
                while target and target not in files:  # a.b.attr -> a.b
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def _is_type_checking(node: ast.AST) -> bool:
    """An ``if TYPE_CHECKING:`` block (imports for annotations only, never run)."""
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and (
        node.test.id == "TYPE_CHECKING")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_walk_finds_a_cycle_and_the_weights_modules():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    assert "conformer_xai.models.hub" in graph["conformer_xai.models.loader"]
    assert "conformer_xai.models.pretrained" in graph["conformer_xai.models.conformer"]  # lazy


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "conformer_xai.audio" in graph and "conformer_xai.cli" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_input_readers_share_the_channel_reader_without_importing_each_other():
    graph = import_graph()
    assert "conformer_xai.channels" in graph["conformer_xai.audio"]
    assert "conformer_xai.channels" in graph["conformer_xai.data"]
    assert "conformer_xai.data" not in graph["conformer_xai.audio"]


def test_no_import_cycle_in_the_models_package():
    graph = import_graph()
    models = {k: {v for v in vs if v.startswith("conformer_xai.models")}
              for k, vs in graph.items() if k.startswith("conformer_xai.models")}
    assert find_cycle(models) is None, " -> ".join(find_cycle(models))


def test_the_model_file_never_reaches_the_weights_facade_or_the_loader():
    graph = import_graph()
    reached, todo = set(), ["conformer_xai.models.conformer"]
    while todo:
        for nxt in graph[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    assert "conformer_xai.models.pretrained" in reached  # timm's pretrained=True path
    assert not reached & {"conformer_xai.models.weights", "conformer_xai.models.loader",
                          "conformer_xai.models.conformer"}
