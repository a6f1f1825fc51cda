"""The project's import graph, computed statically with ``ast`` from the code as it is.

Shared by tests/test_layering.py (no cycles, the layering of docs/architecture.md) and
tests/test_dvc_deps.py (every module a stage runs is a dep of that stage in dvc.yaml). Nothing
here is a hand-kept list of modules: the packages come from pyproject.toml's setuptools
``include`` patterns, the modules from the files in them.

What counts as an import of module ``m``:

* every ``import``/``from ... import`` anywhere in ``m``, at module level or inside a function
  (a function that runs imports its module then), relative imports resolved;
* ``from pkg import name`` is an import of ``pkg.name`` where that is a module, else of ``pkg``
  (a package import means its ``__init__.py``);
* in a module that calls ``import_module``, every string constant that names a project module
  (``kernels``' lazy attributes, for instance). Names built at run time (f-strings) are not seen.

Imports under ``if TYPE_CHECKING:`` never run: they are kept apart (``Import.typing_only``),
so they make no cycle and no stage dependency, but they still count for the layering.
"""

from __future__ import annotations

import ast
import tomllib
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Import:
    target: str  # a project module, or the dotted name of a third-party one
    line: int
    typing_only: bool  # under `if TYPE_CHECKING:`


@dataclass
class Module:
    name: str
    path: Path  # relative to the repository
    is_package: bool  # an __init__.py
    imports: list[Import] = field(default_factory=list)  # project modules
    external: list[Import] = field(default_factory=list)  # everything else, as written


def project_packages(root: Path = REPO) -> list[str]:
    """Top-level packages of the project: pyproject.toml's ``include`` patterns that exist."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    names = sorted({p.split(".")[0].rstrip("*") for p in patterns})
    return [n for n in names if (root / n / "__init__.py").is_file()]


def _module_name(rel: Path) -> tuple[str, bool]:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class ImportGraph:
    def __init__(self, root: Path = REPO) -> None:
        self.root = root
        self.packages = project_packages(root)
        self.modules: dict[str, Module] = {}
        for package in self.packages:
            for path in sorted((root / package).rglob("*.py")):
                rel = path.relative_to(root)
                if any(part == "__pycache__" or part.startswith(".") for part in rel.parts):
                    continue
                name, is_package = _module_name(rel)
                self.modules[name] = Module(name, rel, is_package)
        for module in self.modules.values():
            self._read(module)

    # --- parsing ------------------------------------------------------------------------

    def _read(self, module: Module) -> None:
        tree = ast.parse((self.root / module.path).read_text(encoding="utf-8"), filename=str(module.path))
        typing_nodes: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                typing_nodes.update(id(n) for stmt in node.body for n in ast.walk(stmt))
        uses_import_module = False
        for node in ast.walk(tree):
            typing_only = id(node) in typing_nodes
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self._add(module, alias.name, node.lineno, typing_only)
            elif isinstance(node, ast.ImportFrom):
                base = self._absolute(module, node.module, node.level)
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    self._add(module, candidate if candidate in self.modules else base, node.lineno, typing_only)
            elif (isinstance(node, ast.Name) and node.id == "import_module") or (
                    isinstance(node, ast.Attribute) and node.attr == "import_module"):
                uses_import_module = True
        if uses_import_module:
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in self.modules:
                    self._add(module, node.value, node.lineno, id(node) in typing_nodes)

    def _absolute(self, module: Module, name: str | None, level: int) -> str:
        if level == 0:
            return name or ""
        package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
        base = package[: len(package) - (level - 1)]
        return ".".join(base + ([name] if name else []))

    def _add(self, module: Module, name: str, line: int, typing_only: bool) -> None:
        if name.split(".")[0] not in self.packages:
            module.external.append(Import(name, line, typing_only))
            return
        # `import a.b.c` imports the deepest of a.b.c, a.b, a that is a project module.
        parts = name.split(".")
        while parts and ".".join(parts) not in self.modules:
            parts.pop()
        if parts and ".".join(parts) != module.name:
            module.imports.append(Import(".".join(parts), line, typing_only))

    # --- queries ------------------------------------------------------------------------

    @cached_property
    def edges(self) -> dict[str, set[str]]:
        """Module -> the project modules it imports when its code runs (TYPE_CHECKING left out)."""
        return {name: {i.target for i in m.imports if not i.typing_only} for name, m in self.modules.items()}

    @staticmethod
    def ancestors(name: str) -> list[str]:
        """``a.b.c`` -> ``a``, ``a.b``: the packages Python runs before the module itself."""
        parts = name.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts))]

    def executed_by(self, entry: str) -> dict[str, list[str]]:
        """Every project module that running ``entry`` may execute -> the import chain to it.

        Transitive over all imports (function-level ones too), plus each module's parent
        packages, whose ``__init__.py`` Python runs first.
        """
        chains: dict[str, list[str]] = {}
        queue: deque[tuple[str, list[str]]] = deque([(entry, [entry])])
        while queue:
            name, chain = queue.popleft()
            if name in chains or name not in self.modules:
                continue
            chains[name] = chain
            for parent in self.ancestors(name):
                queue.append((parent, [*chain, f"{parent} (parent package)"]))
            for target in sorted(self.edges[name]):
                queue.append((target, [*chain, target]))
        return chains

    def cycles(self) -> list[tuple[list[str], set[str]]]:
        """Per strongly connected component of the graph: one cycle through it (``[a, b, ..., a]``)
        and all its modules (every one of them is on some cycle)."""
        found = []
        for component in _strongly_connected(self.edges):
            start = min(component)
            found.append((_path_back(self.edges, start, component), component))
        return sorted(found, key=lambda pair: pair[0])


def _strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm (iterative); only components that hold a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[set[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    result.append(component)
    return result


def _path_back(edges: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one component."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(edges[node] & within):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in a cycle but no path leads back to it")
