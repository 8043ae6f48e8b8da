"""
The import graph of ``sb3_safeq``, read from the source with :mod:`ast` (nothing is imported), has no cycles.

Three kinds of edges:

- ``module``: an import statement that runs when the module is imported (module body, class bodies, module-level
  ``if``/``try``; ``if TYPE_CHECKING:`` blocks are skipped, they never run);
- ``function``: an import statement inside a function, run when the function is called;
- ``string``: a string constant that names a module of the package (``"sb3_safeq.bench.cli:main"``), as importlib
  dispatch tables, gymnasium entry points and the benchmark's class paths do: imported on use, like ``function``.

A cycle of ``module`` edges is a real import-time cycle (a partially initialized module on some import order): none
is allowed anywhere in the package. Between subpackages (``sb3_safeq.zoo``, ``sb3_safeq.bench``, ...; each module at
the root of the package is its own node), the dependencies must go one way, whatever the kind of edge: a lazy import
in a dispatch table is still a dependency (``sb3-safeq bench`` used to be dispatched by ``sb3_safeq.zoo.cli`` while
``sb3_safeq.bench`` imports ``sb3_safeq.zoo.config``).

The implicit import of a parent package (``import sb3_safeq.zoo.config`` runs ``sb3_safeq/__init__.py`` first) is
not an edge: a package's ``__init__`` importing its own submodules would make every package a cycle.

Run as a script (``python tests/test_import_graph.py``) to print every cycle of every kind of edge.
"""

import ast
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "sb3_safeq"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

#: A string constant that may name a module of the package: ``pkg.module``, ``pkg.module:attribute`` or
#: ``pkg.module.attribute`` (rl-zoo3's ``env_wrapper`` form).
_MODULE_STRING = re.compile(rf"{PACKAGE}(\.\w+)*(:[\w.]+)?")


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (both module names of the package)."""

    source: str
    target: str
    kind: str  # "module", "function" or "string" (see the module docstring)
    line: int


def package_modules(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """
    :param package_dir: the package's folder
    :return: module name -> source file, for every ``.py`` file of the package (``__init__.py`` names the package)
    """
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _known_module(name: str, modules: dict[str, Path]) -> str | None:
    """
    :param name: a dotted name, possibly followed by attributes (``sb3_safeq.zoo.wrappers.safety_wrapper``)
    :param modules: the modules of the package
    :return: the longest prefix of ``name`` that is a module of the package, or None
    """
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


class _ImportCollector(ast.NodeVisitor):
    """Collects the edges of one module, knowing whether each statement sits inside a function."""

    def __init__(self, module: str, is_package: bool, modules: dict[str, Path]) -> None:
        """
        :param module: the module's name
        :param is_package: whether the module is a package's ``__init__`` (relative imports start there)
        :param modules: the modules of the package
        """
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.modules = modules
        self.function_depth = 0
        self.edges: list[Edge] = []

    def _add(self, name: str, node: ast.AST, kind: str | None = None) -> None:
        target = _known_module(name, self.modules)
        if target is not None and target != self.module:
            statement_kind = "function" if self.function_depth else "module"
            self.edges.append(Edge(self.module, target, kind or statement_kind, getattr(node, "lineno", 0)))

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        # Decorators and default values run at definition time, the body only when called.
        for child in [*getattr(node, "decorator_list", []), *node.args.defaults, *node.args.kw_defaults]:
            if child is not None:
                self.visit(child)
        self.function_depth += 1
        for child in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(child)
        self.function_depth -= 1

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function
    visit_Lambda = _visit_function

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for child in node.orelse:  # the body never runs
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - node.level + 1]
            origin = ".".join([*base, node.module] if node.module else base)
        else:
            origin = node.module or ""
        self._add(origin, node)
        for alias in node.names:  # ``from sb3_safeq.bench import algorithms`` imports a module
            if f"{origin}.{alias.name}" in self.modules:
                self._add(f"{origin}.{alias.name}", node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and _MODULE_STRING.fullmatch(node.value):
            self._add(node.value.partition(":")[0], node, kind="string")


def import_edges(modules: dict[str, Path] | None = None) -> list[Edge]:
    """
    :param modules: module name -> source file (default: every module of the package)
    :return: every edge between modules of the package
    """
    modules = package_modules() if modules is None else modules
    edges = []
    for name, path in modules.items():
        collector = _ImportCollector(name, path.name == "__init__.py", modules)
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        edges += collector.edges
    return edges


def subpackage(module: str) -> str:
    """
    :param module: a module name of the package
    :return: its subpackage (``sb3_safeq.zoo`` for ``sb3_safeq.zoo.cli``); a module at the root is its own node
    """
    parts = module.split(".")
    return ".".join(parts[:2])


def cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """
    The strongly connected components of more than one node, and the nodes with an edge to themselves (Tarjan).

    :param edges: ``(source, target)`` pairs
    :return: each cycle's nodes, sorted
    """
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
        graph.setdefault(target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def module_edges(edges: Iterable[Edge], kinds: set[str]) -> set[tuple[str, str]]:
    """:return: the ``(source, target)`` module pairs of the edges of these kinds"""
    return {(edge.source, edge.target) for edge in edges if edge.kind in kinds}


def subpackage_edges(edges: Iterable[Edge], kinds: set[str]) -> set[tuple[str, str]]:
    """:return: the ``(source, target)`` subpackage pairs of the edges of these kinds, across subpackages"""
    pairs = {(subpackage(edge.source), subpackage(edge.target)) for edge in edges if edge.kind in kinds}
    return {(source, target) for source, target in pairs if source != target}


def describe(cycle: list[str], edges: list[Edge], kinds: set[str], group: bool) -> Iterator[str]:
    """
    :param cycle: the nodes of a cycle (modules, or subpackages when ``group``)
    :param edges: every edge
    :param kinds: the kinds of edges the cycle was found with
    :param group: whether the nodes are subpackages
    :return: lines ``source -> target (kind, file:line)`` for the edges inside the cycle
    """
    members = set(cycle)
    for edge in edges:
        source, target = (subpackage(edge.source), subpackage(edge.target)) if group else (edge.source, edge.target)
        if edge.kind in kinds and source in members and target in members and (source != target or not group):
            yield f"  {edge.source} -> {edge.target} ({edge.kind}, line {edge.line})"


def test_the_graph_sees_every_kind_of_edge() -> None:
    # The collector itself: a regression here would make the tests below pass vacuously.
    edges = import_edges()
    seen = {(edge.source, edge.target, edge.kind) for edge in edges}
    assert ("sb3_safeq.zoo.train", "sb3_safeq.zoo.config", "module") in seen
    assert ("sb3_safeq.bench.cli", "sb3_safeq.bench.report", "function") in seen
    assert ("sb3_safeq.bench", "sb3_safeq.bench.cli", "string") in seen  # the ``bench`` sub-command
    assert ("sb3_safeq.zoo.cli", "sb3_safeq.zoo.train", "string") in seen
    assert ("sb3_safeq.envs", "sb3_safeq.envs.cliff_walking", "string") in seen


def test_no_import_time_cycle_between_modules() -> None:
    edges = import_edges()
    found = cycles(module_edges(edges, {"module"}))
    report = [line for cycle in found for line in describe(cycle, edges, {"module"}, group=False)]
    assert not found, "import-time cycles:\n" + "\n".join(report)


def test_subpackages_depend_one_way() -> None:
    edges = import_edges()
    kinds = {"module", "function", "string"}
    found = cycles(subpackage_edges(edges, kinds))
    report = [line for cycle in found for line in describe(cycle, edges, kinds, group=True)]
    assert not found, f"cycles between subpackages {found}:\n" + "\n".join(report)


def test_zoo_does_not_depend_on_bench() -> None:
    # The benchmark reads the zoo's hyperparameter files, so the zoo must never dispatch to the benchmark itself.
    edges = subpackage_edges(import_edges(), {"module", "function", "string"})
    assert ("sb3_safeq.zoo", "sb3_safeq.bench") not in edges
    assert ("sb3_safeq.bench", "sb3_safeq.cli") not in edges  # the dispatcher sits above both


if __name__ == "__main__":
    all_edges = import_edges()
    for title, kinds in [
        ("import-time (module-level imports)", {"module"}),
        ("function-level imports", {"function"}),
        ("string references (importlib dispatch, entry points)", {"string"}),
        ("all edges", {"module", "function", "string"}),
    ]:
        for group in (False, True):
            pairs = subpackage_edges(all_edges, kinds) if group else module_edges(all_edges, kinds)
            found = cycles(pairs)
            print(f"{'subpackage' if group else 'module'} cycles, {title}: {len(found)}")
            for cycle in found:
                print(f" {' <-> '.join(cycle)}")
                print("\n".join(describe(cycle, all_edges, kinds, group)))
