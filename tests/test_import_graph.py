"""No hf_capacity module imports back from a module that imports it: the package's import graph has no cycle.

The graph is read from the source with ``ast`` (nothing is imported). An edge A → B means that loading A runs an
import of B at load time: an ``import``/``from ... import`` anywhere in A's module body or class bodies, inside
``if``/``try``/``with`` blocks too, but not under ``if TYPE_CHECKING:`` (never run) and not inside a function
(see below). ``from .pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg``; importing
``a.b.c`` also loads the packages ``a.b`` (its ``__init__``), so that is an edge too, except to A's own parent
packages, which Python has always started loading before A.

Function-level (lazy) imports are not edges of the checked graph: they run when the function is called, after
the modules involved have finished loading, so they cannot meet a half-initialised module; the package uses them
to keep heavy or optional libraries (torch, peft, pandas) off ``import hf_capacity``. They must not be a way
around this rule, though: the lazy imports that close a loop are listed in ``LAZY_LOOPS`` below, and a new one
fails the second test (move the shared code into a module both sides can import instead).
"""

from __future__ import annotations

import ast
from pathlib import Path

import hf_capacity

PACKAGE_DIR = Path(hf_capacity.__file__).parent


def _module_name(path: Path) -> str:
    parts = ["hf_capacity", *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _targets(node: ast.Import | ast.ImportFrom, importer: str) -> set[str]:
    """The hf_capacity modules ``node`` loads (with their parent packages outside the importer's own)."""
    found: set[str] = set()
    if isinstance(node, ast.Import):
        found = {alias.name for alias in node.names}
    else:
        if node.level:
            base = importer if _is_package(importer) else importer.rpartition(".")[0]
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = ".".join(part for part in (base, node.module) if part)
        else:
            source = node.module or ""
        found.add(source)
        found |= {f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in MODULES}
    own_parents = {importer.rsplit(".", k)[0] for k in range(1, importer.count(".") + 1)}
    loaded = set()
    for name in found:
        parts = name.split(".")
        loaded |= {".".join(parts[:k]) for k in range(1, len(parts) + 1)}
    return {name for name in loaded if name in MODULES and name not in own_parents and name != importer}


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(node: ast.AST, importer: str, in_function: bool, out: dict[str, set[str]]) -> None:
    for child in ast.iter_child_nodes(node):
        if _is_type_checking(child):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            out["lazy" if in_function else "load"] |= _targets(child, importer)
        else:
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            _imports(child, importer, inner, out)


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(load-time edges, function-level edges) of every module in the package."""
    load, lazy = {}, {}
    for name, path in MODULES.items():
        edges = {"load": set(), "lazy": set()}
        _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), name, False, edges)
        load[name], lazy[name] = edges["load"], edges["lazy"] - edges["load"]
    return load, lazy


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


LAZY_LOOPS: set[tuple[str, str]] = {
    # the memorization run (a Trainer with the MemorizationCallback, which measures with memorization.memorized_bits)
    # lives beside the measurement it triggers; it goes once the run has a module of its own
    ("hf_capacity.memorization", "hf_capacity.callbacks"),
}
"""Function-level imports known to close a loop (importer, imported); each should go, none should be added."""


def test_the_graph_reader_sees_the_package():
    load, lazy = import_graph()
    assert {"hf_capacity.training", "hf_capacity.callbacks", "hf_capacity.checkpoints", "hf_capacity.steps",
            "hf_capacity.scaling"} <= set(load)
    assert "hf_capacity.checkpoints" in load["hf_capacity.callbacks"]
    assert "hf_capacity.steps" in load["hf_capacity.training"]
    assert "hf_capacity.callbacks" in lazy["hf_capacity.training"]  # inside train_capacity
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_back_from_a_module_that_imports_it():
    load, _ = import_graph()
    assert find_cycle(load) is None, " → ".join(find_cycle(load))


def test_no_new_lazy_import_closes_a_loop():
    load, lazy = import_graph()
    graph = {name: load[name] | {t for t in lazy[name] if (name, t) not in LAZY_LOOPS} for name in load}
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))
    for importer, imported in LAZY_LOOPS:  # the list holds only edges that still exist
        assert imported in lazy[importer], f"{importer} no longer imports {imported}: drop it from LAZY_LOOPS"
