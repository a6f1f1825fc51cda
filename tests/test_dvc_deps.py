"""dvc.yaml's code deps are complete, so a cached stage can never outlive a change to its code.

DVC reruns a stage only when one of its deps changes. For every stage, the project modules its
command may execute are computed from the code (tests/importgraph.py: every import, transitively,
function-level ones included, each module's parent packages too) and each one's file must be
a dep of the stage, itself or through a directory dep such as ``kernels`` (.dvcignore keeps
``__pycache__`` out of a directory's hash). Every dep must exist or be another stage's output,
and no stage lists a module file it never runs (that would only rerun it for nothing).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.importgraph import REPO, ImportGraph

_VAR = re.compile(r"\$\{\s*([A-Za-z0-9_.-]+)\s*\}")


@dataclass
class Stage:
    name: str  # the stage in dvc.yaml, e.g. train
    instance: str  # one foreach item of it, e.g. train@forge-tiny
    cmds: list[str]
    deps: list[str]
    outs: list[str]  # outs, metrics and plots: everything the stage writes


def _lookup(context: dict, dotted: str, where: str):
    value = context
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise AssertionError(f"{where}: ${{{dotted}}} is not defined (params.yaml, vars or foreach)")
        value = value[part]
    return value


def _interpolate(value, context: dict, where: str):
    if isinstance(value, dict):
        return {_interpolate(k, context, where): _interpolate(v, context, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, context, where) for v in value]
    if not isinstance(value, str):
        return value
    whole = _VAR.fullmatch(value.strip())
    if whole:
        return _lookup(context, whole.group(1), where)
    return _VAR.sub(lambda m: str(_lookup(context, m.group(1), where)), value)


def _paths(entries) -> list[str]:
    """deps/outs/metrics/plots entries (a path, or a one-key mapping path -> options) -> paths."""
    found = []
    for entry in entries or []:
        found.extend([entry] if isinstance(entry, str) else list(entry))
    return [p.rstrip("/").removeprefix("./") for p in found]


def load_stages(root: Path = REPO) -> list[Stage]:
    """Every stage of dvc.yaml, one per foreach item, its ``${...}`` resolved as DVC does."""
    dvc = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    params = root / "params.yaml"
    context: dict = yaml.safe_load(params.read_text(encoding="utf-8")) if params.is_file() else {}
    for var in dvc.get("vars", []):
        context.update(var if isinstance(var, dict) else
                       yaml.safe_load((root / var.split(":")[0]).read_text(encoding="utf-8")))
    stages = []
    for name, spec in dvc["stages"].items():
        if "matrix" in spec:
            raise AssertionError(f"stage {name} uses `matrix`, which load_stages() does not expand yet")
        if "foreach" in spec:
            items = _interpolate(spec["foreach"], context, name)
            pairs = items.items() if isinstance(items, dict) else enumerate(items)
            instances = [(f"{name}@{key}", {**context, "key": key, "item": item}) for key, item in pairs]
            body = spec["do"]
        else:
            instances, body = [(name, context)], spec
        for instance, ctx in instances:
            s = _interpolate(body, ctx, instance)
            cmds = s["cmd"] if isinstance(s["cmd"], list) else [s["cmd"]]
            outs = _paths(s.get("outs")) + _paths(s.get("metrics")) + _paths(s.get("plots"))
            stages.append(Stage(name, instance, cmds, _paths(s.get("deps")), outs))
    return stages


def entry_module(cmd: str, graph: ImportGraph) -> str:
    """The project module a stage command runs: ``python -m <module> ...`` or ``python <file>.py``."""
    argv = shlex.split(cmd)
    if argv and Path(argv[0]).name.startswith("python"):
        if len(argv) > 2 and argv[1] == "-m" and argv[2] in graph.modules:
            return argv[2]
        by_path = {str(m.path): m.name for m in graph.modules.values()}
        if len(argv) > 1 and argv[1].removeprefix("./") in by_path:
            return by_path[argv[1].removeprefix("./")]
    raise AssertionError(f"cannot tell which project code `{cmd}` runs: a stage's command must be "
                         "`python -m <project module> ...` so that this test can check its deps")


def covers(dep: str, path: str) -> bool:
    return path == dep or path.startswith(dep + "/")


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return ImportGraph()


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    found = load_stages()
    assert found, "dvc.yaml declares no stage"
    return found


def _code_by_stage(stages: list[Stage], graph: ImportGraph) -> dict[str, dict[str, list[str]]]:
    """Stage name -> module file it may execute -> the import chain that reaches it."""
    code: dict[str, dict[str, list[str]]] = {}
    for stage in stages:
        files = code.setdefault(stage.name, {})
        for cmd in stage.cmds:
            for module, chain in graph.executed_by(entry_module(cmd, graph)).items():
                files.setdefault(str(graph.modules[module].path), chain)
    return code


def test_every_module_a_stage_runs_is_one_of_its_deps(stages, graph):
    missing: dict[tuple[str, str], list[str]] = {}
    for stage, files in _code_by_stage(stages, graph).items():
        for instance in (s for s in stages if s.name == stage):
            for path, chain in files.items():
                if not any(covers(dep, path) for dep in instance.deps):
                    missing.setdefault((stage, path), chain)
    lines = [f"  stage {stage}: add the line `- {path}` to its deps  (runs it: {' -> '.join(chain)})"
             for (stage, path), chain in sorted(missing.items())]
    if missing:
        pytest.fail("dvc.yaml misses code its stages run, so `dvc repro` would keep a stale cached output "
                    "after a change to these files:\n" + "\n".join(lines)
                    + "\n(then `dvc repro` rewrites dvc.lock's deps of those stages)", pytrace=False)


def test_no_stage_lists_a_module_it_never_runs(stages, graph):
    """A module file listed as a dep but never run: a leftover that reruns the stage for nothing."""
    module_files = {str(m.path) for m in graph.modules.values()}
    code = _code_by_stage(stages, graph)
    extra = sorted({(s.name, dep) for s in stages for dep in s.deps
                    if dep in module_files and dep not in code[s.name]})
    assert not extra, "dvc.yaml lists code its stages never import:\n" + "\n".join(
        f"  stage {stage}: remove the line `- {dep}` from its deps" for stage, dep in extra)


def test_every_dep_exists_or_is_built_by_a_stage(stages):
    outs = [out for s in stages for out in s.outs]
    dangling = sorted({
        (s.instance, dep) for s in stages for dep in s.deps
        if not (REPO / dep).exists() and not any(covers(dep, out) or covers(out, dep) for out in outs)
    })
    assert not dangling, "dvc.yaml has deps that neither exist nor are a stage's output:\n" + "\n".join(
        f"  stage {instance}: `- {dep}` (remove it, or fix the path)" for instance, dep in dangling)


def test_directory_deps_ignore_bytecode():
    """A directory dep (``kernels``) is hashed whole: __pycache__ must not change its hash."""
    ignored = {line.strip() for line in (REPO / ".dvcignore").read_text(encoding="utf-8").splitlines()}
    assert {"__pycache__/", "*.pyc"} <= ignored, ".dvcignore must list __pycache__/ and *.pyc"


# --- the checker itself, on a made-up pipeline ------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")


def test_checker_expands_foreach_and_sees_function_level_and_parent_imports(tmp_path):
    _write(tmp_path, {
        "pyproject.toml": '[tool.setuptools.packages.find]\ninclude = ["app*", "lib*"]\n',
        "params.yaml": "models:\n  small: {version: 2}\n",
        "app/__init__.py": "",
        "app/run.py": "def main():\n    from lib.deep import helper\n",
        "lib/__init__.py": "from . import base\n",
        "lib/base.py": "",
        "lib/deep.py": "from .base import x\n",
        "lib/unused.py": "",
        "dvc.yaml": yaml.safe_dump({"stages": {"run": {"foreach": "${models}", "do": {
            "cmd": "python -m app.run ${key}@${item.version}",
            "deps": ["entries/${key}/${item.version}.yaml", "app/run.py", "lib/deep.py", "lib/unused.py"],
            "outs": ["out/${key}"]}}}}),
    })
    graph = ImportGraph(tmp_path)
    (stage,) = load_stages(tmp_path)
    assert (stage.instance, stage.cmds, stage.outs) == ("run@small", ["python -m app.run small@2"], ["out/small"])
    assert stage.deps[0] == "entries/small/2.yaml"
    code = _code_by_stage([stage], graph)["run"]
    assert set(code) == {"app/__init__.py", "app/run.py", "lib/__init__.py", "lib/base.py", "lib/deep.py"}
    assert code["lib/base.py"] == ["app.run", "lib.deep", "lib.base"]
    assert code["lib/__init__.py"] == ["app.run", "lib.deep", "lib (parent package)"]
    with pytest.raises(AssertionError, match="must be `python -m"):
        entry_module("bash -c 'python -m app.run'", graph)
