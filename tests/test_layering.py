"""The house's layering, checked on every module of the project: no import cycle, no import upward.

The import graph is computed with ``ast`` from the code as it is (tests/importgraph.py: module-
and function-level imports, relative ones resolved). ``LAYERS`` below is the table of
docs/architecture.md ("What may import what"); that page is written from it, so change the two
together. A package not yet in the tree (trust, sharing, contributions) simply has no modules.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.importgraph import REPO, ImportGraph

# What may import what, top to bottom: a module may import its own layer and the layers below,
# never one above (docs/architecture.md, "What may import what"). A module belongs to the layer
# of its longest matching prefix: `commonforge.cli.build_cmds` is top, `commonforge.errors` floor.
LAYERS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("top", ("commonforge.cli", "commonforge.__main__", "explorer"), "wiring and layout only, no logic of their own"),
    ("contributions", ("contributions",), "the pull-request flow (uses the build to dry-run)"),
    ("build", ("pipelines", "sharing"), "the build's logic; moving releases between peers"),
    ("evals", ("evals",), "lm-eval glue (uses serving's loader)"),
    ("middle", ("serving", "model_cards"), "the one release loader and engine; the card renderer"),
    ("trust", ("trust",), "signatures, policy, log: imports registry only"),
    ("ground", ("registry", "kernels"), "what the forge knows; tensors and modules"),
    ("floor", ("commonforge",), "the error hierarchy and settings, which everything may import"),
)

# Imports between layers that the order allows but the design rules out.
FORBIDDEN: tuple[tuple[str, str, str], ...] = (
    ("kernels", "registry", "kernels know tensors and modules, never releases"),
    ("registry", "kernels", "`import registry` stays free of torch, which kernels load"),
    ("trust", "kernels", "trust imports registry only"),
)

# Packages that a machine which never runs a model must be able to import: no module of theirs
# imports these libraries (at any level), and importing the package loads none of them.
LIGHT = ("registry", "trust")
HEAVY = ("torch", "triton", "transformers", "mlflow", "safetensors.torch")


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(name: str) -> int | None:
    """Index in LAYERS of the module's longest matching prefix (None: in no layer)."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes, _) in enumerate(LAYERS):
        for prefix in prefixes:
            if within(name, prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return ImportGraph()


def test_every_module_has_a_layer(graph):
    assert graph.modules, "no project module found (pyproject.toml's setuptools include)"
    homeless = sorted(name for name in graph.modules if layer_of(name) is None)
    assert not homeless, (f"modules in no layer: {', '.join(homeless)}; add their package to LAYERS in "
                          "tests/test_layering.py and to docs/architecture.md")


def _edge_lines(graph: ImportGraph, source: str, target: str) -> str:
    lines = sorted({i.line for i in graph.modules[source].imports if i.target == target})
    return f"{graph.modules[source].path}:{','.join(map(str, lines))}"


def cycle_report(graph: ImportGraph) -> list[str]:
    """Per tangle of modules: one cycle through it (``a -> b -> a``), then every import inside
    it with its file and line (breaking a cycle means removing some of these)."""
    report = []
    for cycle, component in graph.cycles():
        inside = [f"      {a} -> {b}  ({_edge_lines(graph, a, b)})"
                  for a in sorted(component) for b in sorted(graph.edges[a] & component)]
        report.append(f"{' -> '.join(cycle)}\n    imports among {', '.join(sorted(component))}:\n"
                      + "\n".join(inside))
    return report


def test_no_import_cycle_between_project_modules(graph):
    report = cycle_report(graph)
    if report:
        pytest.fail("import cycles between project modules:\n  " + "\n  ".join(report), pytrace=False)


def layering_violations(graph: ImportGraph) -> list[str]:
    found = []
    for name, module in sorted(graph.modules.items()):
        mine = layer_of(name)
        for imp in module.imports:
            theirs = layer_of(imp.target)
            where = f"{module.path}:{imp.line}: {name} imports {imp.target}"
            if mine is not None and theirs is not None and theirs < mine:
                found.append(f"{where}, a higher layer ({LAYERS[theirs][0]} above {LAYERS[mine][0]})")
            for low, high, why in FORBIDDEN:
                if within(name, low) and within(imp.target, high):
                    found.append(f"{where}: {why}")
        if any(within(name, p) for p in LIGHT):
            found.extend(f"{module.path}:{imp.line}: {name} imports {imp.target}: `import "
                         f"{name.split('.')[0]}` must stay free of {', '.join(HEAVY)}"
                         for imp in module.external if any(within(imp.target, h) for h in HEAVY))
    return sorted(set(found))


def test_no_import_breaks_the_layering(graph):
    found = layering_violations(graph)
    if found:
        pytest.fail("imports that break the layering of docs/architecture.md:\n  " + "\n  ".join(found), pytrace=False)


@pytest.mark.parametrize("package", [p for p in LIGHT if (REPO / p / "__init__.py").is_file()])
def test_importing_a_light_package_loads_no_heavy_library(package):
    code = (f"import sys, {package}; heavy = {HEAVY!r}; "
            "print(' '.join(sorted(m for m in sys.modules if m in heavy)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"`import {package}` loads {result.stdout.strip()}"


# --- the checker itself, on a made-up project -------------------------------------------


def _project(root: Path, files: dict[str, str]) -> ImportGraph:
    (root / "pyproject.toml").write_text('[tool.setuptools.packages.find]\ninclude = ["registry*", "pipelines*"]\n')
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return ImportGraph(root)


def test_the_checker_finds_function_level_relative_and_lazy_cycles_and_upward_imports(tmp_path):
    graph = _project(tmp_path, {
        "registry/__init__.py": "from .a import x\n",
        "registry/a.py": "import torch\ndef f():\n    from registry import b\n",
        "registry/b.py": "from . import a\n",
        "registry/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from registry.d import D\n",
        "registry/d.py": "import importlib\nM = importlib.import_module('registry.c')\n",
        "registry/e.py": "def g():\n    import pipelines.stage\n",
        "pipelines/__init__.py": "",
        "pipelines/stage.py": "from registry import a\n",
    })
    assert graph.edges["registry"] == {"registry.a"}
    assert graph.edges["registry.d"] == {"registry.c"}  # through the import_module string
    assert graph.edges["registry.c"] == set()  # TYPE_CHECKING: never runs, so no cycle with d
    assert graph.cycles() == [(["registry.a", "registry.b", "registry.a"], {"registry.a", "registry.b"})]
    assert graph.modules["registry.c"].imports[0].typing_only
    report = layering_violations(graph)
    assert any("registry/e.py:2: registry.e imports pipelines.stage, a higher layer" in v for v in report)
    assert any("registry/a.py:1: registry.a imports torch" in v for v in report)
    assert len(report) == 2, report
