"""The build manifest, schema 2: only the packages the stage processes imported shape the digest.

Runs :func:`pipelines.manifest.build_manifest` over a copy of the shared tiny forge's build with
an edited ``requirements.lock`` (and, for a version change, the stage records that a build in
that environment would have written), so no test rebuilds anything.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from commonforge.errors import BuildError
from pipelines.compare import compare_manifests
from pipelines.determinism import normalize_dist
from pipelines.manifest import ENV_STAGES, build_manifest, dataset_outputs, lock_pins, model_outputs
from registry import Registry
from registry.schema import BuildManifest, Release, lock_files_digest
from tests.helpers import VENV_BIN

COMMIT = "1" * 40


@pytest.fixture
def build_copy(tiny_forge, tmp_path):
    """A root holding the tiny forge's build/ and requirements.lock, and its recipe."""
    root = tmp_path / "forge"
    shutil.copytree(tiny_forge.root / "build", root / "build", ignore=shutil.ignore_patterns("hf", "card", "eval"))
    shutil.copy2(tiny_forge.root / "requirements.lock", root / "requirements.lock")
    recipe = Registry(tiny_forge.root).recipe("recipe/forge-tiny@1")
    return root, recipe


def _stage_records(root: Path) -> list[Path]:
    return sorted((root / "build").rglob("env/*.json"))


def test_every_stage_upstream_of_the_release_records_its_imports(tiny_forge):
    out = model_outputs(tiny_forge.root, "forge-tiny")
    data = dataset_outputs(tiny_forge.root, "tiny-local")
    records = {s: json.loads(out.stage_env(s).read_text()) for s in ("tokenizer", "train", "quantize")}
    records |= {s: json.loads(data.stage_env(s).read_text()) for s in ("fetch", "prepare")}
    assert set(records) == set(ENV_STAGES)
    # What each process really imported: torch trains and quantizes, tokenizers tokenize; the
    # stdlib and the project itself are not distributions to pin.
    assert {"torch", "transformers", "safetensors"} <= set(records["train"]["packages"])
    assert "tokenizers" in records["tokenizer"]["packages"] and "torch" not in records["fetch"]["packages"]
    assert {"torch", "transformers", "safetensors"} <= set(records["quantize"]["packages"])
    assert not {"commonforge", "json", "os"} & {k for r in records.values() for k in r["packages"]}
    # What only experiment tracking loaded depends on the tracking backend, not on the bits.
    assert not {"mlflow", "sqlalchemy", "alembic"} & set(records["train"]["packages"])


def test_the_release_pins_each_imported_package_with_the_locks_sha256(tiny_forge):
    rel = Registry(tiny_forge.root).release("model/forge-tiny@1.0.0")
    m = rel.manifest
    assert m.schema_version == 2 and m.lock_sha256 is None
    lock = lock_pins(tiny_forge.root)
    assert "torch" in m.environment.packages
    for name, pin in m.environment.packages.items():
        assert pin.lock_sha256 == lock_files_digest(lock[name][1]), name
        assert lock[name][0].split("+")[0] == pin.version.split("+")[0], name
    # torch's CPU wheel is the one file the lock allows for it: its digest is over that hash alone.
    (torch_wheel,) = lock["torch"][1]
    assert m.environment.packages["torch"].lock_sha256 == hashlib.sha256(f"{torch_wheel}\n".encode()).hexdigest()


def test_a_package_no_stage_imports_does_not_change_the_release_digest(build_copy):
    root, recipe = build_copy
    before = build_manifest(root, recipe, COMMIT)
    lock = root / "requirements.lock"
    lock.write_text(lock.read_text() + "unused-package-for-the-test==1.2.3 \\\n"
                    "    --hash=sha256:" + "ab" * 32 + "\n    # via nothing\n")
    after = build_manifest(root, recipe, COMMIT)
    assert after.digest == before.digest
    assert compare_manifests(before, after).identical


def test_a_stage_dependency_of_another_version_changes_the_digest_and_is_explained(build_copy):
    root, recipe = build_copy
    before = build_manifest(root, recipe, COMMIT)
    version = before.environment.packages["numpy"].version
    other = version + ".post9"
    # A build in an environment with another numpy: the lock pins it and the stages recorded it.
    lock = root / "requirements.lock"
    lock.write_text(re.sub(rf"^numpy=={re.escape(version)} ", f"numpy=={other} ", lock.read_text(), flags=re.M))
    changed = 0
    for path in _stage_records(root):
        record = json.loads(path.read_text())
        if "numpy" in record["packages"]:
            record["packages"]["numpy"] = other
            path.write_text(json.dumps(record))
            changed += 1
    assert changed >= 2
    after = build_manifest(root, recipe, COMMIT)
    assert after.digest != before.digest
    assert after.environment.packages_sha256 != before.environment.packages_sha256
    assert f"package numpy {version} -> {other}" in compare_manifests(before, after).environment


def test_a_build_outside_the_locked_environment_is_refused(build_copy):
    root, recipe = build_copy
    lock = root / "requirements.lock"
    lock.write_text(re.sub(r"^numpy==(\S+) ", "numpy==0.0.1 ", lock.read_text(), flags=re.M))
    with pytest.raises(BuildError, match="the build imported numpy .* requirements.lock pins numpy==0.0.1") as err:
        build_manifest(root, recipe, COMMIT)
    assert "make venv" in err.value.hint


def test_a_missing_stage_record_is_refused(build_copy):
    root, recipe = build_copy
    model_outputs(root, recipe).stage_env("quantize").unlink()
    with pytest.raises(BuildError, match="quantize.json is missing"):
        build_manifest(root, recipe, COMMIT)


def test_imported_distributions_are_what_the_process_imported():
    code = ("import yaml, sys; from pipelines.determinism import imported_distributions as f; "
            "import json; print(json.dumps(f()))")
    out = subprocess.run([str(VENV_BIN / "python"), "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    found = json.loads(out.stdout)
    assert "pyyaml" in found  # `import yaml` maps to its distribution's normalized name
    assert "torch" not in found and "commonforge" not in found


def test_untracked_imports_stay_out_of_the_record_until_imported_outside():
    code = ("import json; from pipelines.determinism import imported_distributions as f, untracked_imports\n"
            "with untracked_imports():\n    import jinja2\n"
            "before = f()\nimport jinja2.sandbox\nprint(json.dumps([before, f()]))")
    out = subprocess.run([str(VENV_BIN / "python"), "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    before, after = json.loads(out.stdout)
    assert "jinja2" not in before and "markupsafe" not in before
    assert "jinja2" in after  # a module of it imported outside the block counts


def test_normalized_names():
    assert normalize_dist("PyYAML") == "pyyaml" and normalize_dist("ruamel.yaml") == "ruamel-yaml"
    assert normalize_dist("compressed_tensors") == "compressed-tensors"


def test_a_schema_2_manifest_with_a_whole_lock_digest_is_refused(tiny_forge):
    data = Registry(tiny_forge.root).release("model/forge-tiny@1.0.0").manifest.model_dump(mode="json",
                                                                                             exclude_none=True)
    with pytest.raises(ValueError, match="no lock_sha256"):
        BuildManifest.model_validate({**data, "lock_sha256": "0" * 64})
    data["environment"]["packages"]["numpy"]["version"] = "0.0.1"  # edited without its digest
    with pytest.raises(ValueError, match="packages_sha256"):
        BuildManifest.model_validate(data)


def test_a_version_1_manifest_stays_readable_and_compares_with_version_2(tiny_forge):
    path = Path(__file__).resolve().parents[1] / "registry" / "data" / "forge-tiny-1.0.0-manifest-v1.yaml"
    import yaml

    v1 = Release.model_validate(yaml.safe_load(path.read_text()))
    assert v1.manifest.schema_version == 1 and v1.release_digest.startswith("a0538c12")
    v2 = Registry(tiny_forge.root).release("model/forge-tiny@1.0.0").manifest
    diff = compare_manifests(v1.manifest, v2, ignore_commit=True)
    assert any(line.startswith("manifest schema 1 -> 2") for line in diff.environment)
    from tests.helpers import other_cpu_vendor_than_committed

    if other_cpu_vendor_than_committed() is None:  # the v1 manifest was built where the committed release was
        assert diff.stages == {}  # the same bits: only the environment is recorded differently
    assert sys.version_info[:2] == tuple(int(x) for x in v1.manifest.environment.python.split("."))
