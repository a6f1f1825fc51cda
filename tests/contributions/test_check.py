"""contributions.check: the table of kinds -> checks, the reports and exit codes, on real git repositories.

Fast checks only (no fetch, no dry-run build): the slow checks have their own tests.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from commonforge.errors import InputError
from contributions.check import (
    CHECKS,
    KIND_CHECKS,
    CheckSpec,
    check,
    run_check,
    run_checks,
    run_table,
    to_json,
    to_markdown,
    to_text,
)
from contributions.diff import Change
from contributions.report import CheckInput
from tests.contributions.gitrepos import branch, commit, entry_path, entry_text, repo, seed_forge, upstream_and_clone, write
from tests.helpers import VENV_BIN, forge_env

TINY = "registry/entries/datasets/tiny-local/1.yaml"
PSALMS = entry_path("dataset", "psalms")


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> Path:
    return seed_forge(tmp_path_factory.mktemp("check-seed") / "forge")


@pytest.fixture
def clone(seed, tmp_path) -> Path:
    _, clone = upstream_and_clone(seed, tmp_path)
    branch(clone, "contrib/test")
    return clone


def tree_state(root: Path) -> tuple[dict[str, bytes], str, list[str]]:
    """The working tree's files, HEAD and the worktrees git knows: what check must leave as it found it."""
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
             if p.is_file() and ".git" not in p.relative_to(root).parts}
    r = repo(root)
    return files, r.head.commit.hexsha, r.git.worktree("list", "--porcelain").splitlines()


def result(report, ref: str, name: str):
    (entry,) = [e for e in report.entries if e.change.ref == ref]
    (found,) = [r for r in entry.results if r.check == name]
    return found


def line_of_text(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_a_new_dataset_passes_the_fast_checks_and_the_tree_is_untouched(clone):
    write(clone, PSALMS, entry_text("dataset", "psalms"))
    commit(clone, "add psalms", "registry")
    before = tree_state(clone)
    report = check(clone, fast=True)
    assert tree_state(clone) == before  # a temporary worktree, removed; the clone as it was
    assert result(report, "dataset/psalms@1", "schema").outcome == "passed"
    assert result(report, "dataset/psalms@1", "questions").outcome in ("passed", "skipped")
    for slow in ("sources", "data policy", "contamination", "dry-run build"):
        r = result(report, "dataset/psalms@1", slow)
        assert (r.outcome, r.details["skip"]) == ("skipped", "fast")
    assert report.verdict in ("passed", "needs-review") and report.exit_code == 0
    assert report.merge_base == repo(clone).commit("main").hexsha

    doc = json.loads(to_json(report))
    assert doc["schema_version"] == 1 and doc["mode"] == "fast" and doc["exit_code"] == 0
    assert doc["head"] == repo(clone).head.commit.hexsha
    assert doc["changes"] == [{"path": PSALMS, "status": "added", "kind": "dataset", "verdict": "check",
                               "reason": "new dataset dataset/psalms@1", "ref": "dataset/psalms@1", "fix": None}]
    (entry,) = doc["entries"]
    assert [c["check"] for c in entry["checks"]] == list(KIND_CHECKS["dataset"])
    assert all(set(c) == {"check", "outcome", "summary", "problems", "details", "seconds"} for c in entry["checks"])

    md = to_markdown(report)
    assert md.startswith("## ") and "commonforge check" in md.splitlines()[0]
    assert "| entry | kind | schema | questions | licenses | sources |" in md
    assert "| `dataset/psalms@1` | dataset | ✅ |" in md
    assert "⏭" in md and "Every changed path" in md


def test_a_recipe_whose_heads_do_not_divide_the_hidden_size_fails_at_that_line(clone):
    path = entry_path("recipe", "forge-odd")
    text = entry_text("recipe", "forge-odd", **{"architecture.hidden_size": 100, "architecture.num_attention_heads": 3})
    write(clone, path, text)
    commit(clone, "odd", "registry")
    report = check(clone, fast=True)
    schema = result(report, "recipe/forge-odd@1", "schema")
    assert schema.outcome == "failed"
    (problem,) = schema.problems
    assert "hidden_size 100 is not divisible by num_attention_heads 3" in problem.message
    assert (problem.path, problem.line) == (path, line_of_text(text, "hidden_size:"))
    assert result(report, "recipe/forge-odd@1", "questions").details["skip"] == "schema"
    assert report.verdict == "failed" and report.exit_code == 1
    assert f"`{path}:{problem.line}`" in to_markdown(report)
    assert f"{path}:{problem.line}: architecture: hidden_size 100" in to_text(report)


def test_unknown_fields_missing_references_and_a_wrong_path_each_get_their_line(clone):
    path = entry_path("recipe", "forge-mini")
    text = entry_text("recipe", "forge-mini", datasets=["dataset/nope@1"], parent="recipe/forge-gone@1").replace(
        "version: '1'", "version: '2'")
    text += "colour: blue\n"
    write(clone, path, text)
    commit(clone, "broken", "registry")
    schema = result(check(clone, fast=True), "recipe/forge-mini@1", "schema")
    assert schema.outcome == "failed"
    assert [(p.message.split(":")[0], p.line) for p in schema.problems] == [("colour", line_of_text(text, "colour:"))]

    text = text.replace("colour: blue\n", "")
    write(clone, path, text)
    commit(clone, "less broken", "registry")
    schema = result(check(clone, fast=True), "recipe/forge-mini@1", "schema")
    found = {p.message.split(":")[0]: p.line for p in schema.problems}
    assert found == {"version": line_of_text(text, "version: '2'"), "datasets[0]": line_of_text(text, "dataset/nope@1"),
                     "parent": line_of_text(text, "parent:")}


def test_an_unanswered_question_fails_at_its_line(clone):
    scaffold = pytest.importorskip("contributions.scaffold")
    text = entry_text("dataset", "psalms", **{"datasheet.motivation": scaffold.marker("Why was this dataset made?")})
    write(clone, PSALMS, text)
    commit(clone, "psalms", "registry")
    questions = result(check(clone, fast=True), "dataset/psalms@1", "questions")
    assert questions.outcome == "failed"
    (problem,) = questions.problems
    assert problem.message.startswith("datasheet.motivation:")
    assert problem.line == line_of_text(text, "motivation:")


def test_a_change_to_a_merged_entry_is_refused_and_code_is_left_for_review(clone):
    (clone / TINY).write_text((clone / TINY).read_text().replace("Tiny local", "Tiny, local"))
    write(clone, "pipelines/extra.py", "X = 1\n")
    commit(clone, "edit and code", "registry", "pipelines")
    report = check(clone, fast=True)
    assert report.entries == [] and report.verdict == "failed" and report.exit_code == 1
    md = to_markdown(report)
    assert "### ❌ Refused changes" in md and f"`{TINY}` (modified)" in md and "tiny-local/2.yaml" in md
    assert "### ⚠️ Needs a maintainer" in md and "`pipelines/extra.py` (added)" in md

    repo(clone).git.reset("-q", "--hard", "HEAD~1")
    write(clone, "pipelines/extra.py", "X = 1\n")
    commit(clone, "code only", "pipelines")
    report = check(clone, fast=True)
    assert (report.verdict, report.exit_code) == ("needs-review", 0)


def test_a_release_copied_under_another_version_fails_its_schema_at_the_line(clone):
    path = "registry/entries/models/forge-tiny/2.0.0.yaml"
    text = (clone / "registry/entries/models/forge-tiny/1.0.0.yaml").read_text().replace(
        "version: 1.0.0", "version: 2.0.0", 1)
    write(clone, path, text)
    commit(clone, "a copied release", "registry")
    schema = result(check(clone, fast=True), "model/forge-tiny@2.0.0", "schema")
    assert schema.outcome == "failed"
    (problem,) = schema.problems
    assert "manifest is for forge-tiny@1.0.0, not forge-tiny@2.0.0" in problem.message
    assert problem.path == path and problem.line is not None


def test_an_added_statement_that_does_not_verify_fails(clone):
    path = "registry/entries/models/forge-tiny/1.0.0.statements/approval-" + "ab" * 32 + ".json"
    write(clone, path, '{"payloadType": "nonsense"}\n')
    commit(clone, "a statement", "registry")
    st = result(check(clone, fast=True), "model/forge-tiny@1.0.0", "statements")
    assert st.outcome == "failed" and st.problems and st.problems[0].path == path


def test_params_listing_a_new_recipe_is_checked_for_consistency(clone):
    write(clone, entry_path("recipe", "forge-mini"), entry_text("recipe", "forge-mini"))
    params = clone / "params.yaml"
    params.write_text(params.read_text().replace("recipes:\n", "recipes:\n  forge-mini: {version: 1}\n"))
    commit(clone, "forge-mini without its training data", "registry", "params.yaml")
    report = check(clone, fast=True)
    (entry,) = [e for e in report.entries if e.change.path == "params.yaml"]
    assert entry.results[0].outcome == "failed"
    assert "training_data needs `forge-mini.tiny-local" in entry.results[0].problems[0].message

    params.write_text(params.read_text().replace(
        "training_data:\n", "training_data:\n  forge-mini.tiny-local: {recipe: forge-mini, dataset: tiny-local}\n"))
    commit(clone, "and its training data", "params.yaml")
    report = check(clone, fast=True)
    (entry,) = [e for e in report.entries if e.change.path == "params.yaml"]
    assert entry.results[0].outcome == "passed"


def test_local_source_files_must_belong_to_a_dataset_this_change_adds(clone):
    write(clone, "registry/local_sources/psalms/psalm_1.txt", "Blessed is the man. " * 30)
    text = entry_text("dataset", "psalms")
    write(clone, PSALMS, text.replace("registry/local_sources/tiny-local/sotu", "registry/local_sources/psalms"))
    write(clone, "registry/local_sources/tiny-local/sotu/2025_extra.txt", "More text. " * 30)
    commit(clone, "psalms", "registry")
    report = check(clone, fast=True)
    by_path = {e.change.path: e.results[0] for e in report.entries if e.change.kind == "local-source"}
    assert by_path["registry/local_sources/psalms/psalm_1.txt"].outcome == "passed"
    merged = by_path["registry/local_sources/tiny-local/sotu/2025_extra.txt"]
    assert merged.outcome == "failed" and "dataset/tiny-local@1" in merged.summary


def test_a_missing_check_is_skipped_a_crashing_one_fails_an_unknown_kind_is_unknown(clone):
    inp = CheckInput(root=clone, ref="dataset/tiny-local@1", path=TINY)
    missing = run_check(CheckSpec("future", "contributions.no_such_check:check_future", fast=True), inp)
    assert (missing.outcome, missing.details["skip"]) == ("skipped", "unavailable")
    assert "not available in this checkout" in missing.summary
    crashed = run_check(CheckSpec("broken", "json:loads", fast=True), inp)  # loads(CheckInput) raises TypeError
    assert crashed.outcome == "failed" and "crashed" in crashed.summary and crashed.seconds >= 0

    future = Change("registry/entries/imports/x/1.yaml", "added", "import", "check", "a kind from a later issue")
    changes, entries = run_table(clone, [future], fast=True)
    assert entries == [] and changes[0].verdict == "unknown" and "no checks for a 'import' change" in changes[0].reason
    assert set(KIND_CHECKS) >= {"dataset", "recipe", "statement"} and set(CHECKS) >= {"schema", "licenses"}
    assert all(":" in spec.target for spec in CHECKS.values())


def test_run_checks_reads_files_as_they_are_on_disk(clone):
    write(clone, PSALMS, entry_text("dataset", "psalms"))  # not committed: the pre-commit hook's case
    report = run_checks(clone, [PSALMS], fast=True)
    assert result(report, "dataset/psalms@1", "schema").outcome == "passed" and report.head is None
    assert report.results and all(r.check in CHECKS for r in report.results)
    with pytest.raises(InputError, match="not inside the repository"):
        run_checks(clone, ["/etc/hostname"], fast=True)
    with pytest.raises(InputError, match="no such file"):
        run_checks(clone, [entry_path("dataset", "nothing")], fast=True)


def cli(clone: Path, *args: str) -> subprocess.CompletedProcess:
    env = forge_env(clone.parent)
    env["GIT_CONFIG_GLOBAL"], env["GIT_CONFIG_NOSYSTEM"] = "/dev/null", "1"
    return subprocess.run([str(VENV_BIN / "commonforge"), "check", *args], cwd=clone, env=env, text=True,
                          capture_output=True, timeout=120)


def test_exit_codes_of_the_command(clone):
    # 2: bad input is an InputError, which the CLI's main turns into its exit code.
    with pytest.raises(InputError, match="--base 'no-such-branch' names no commit") as err:
        check(clone, "no-such-branch", fast=True)
    assert err.value.exit_code == 2

    (clone / TINY).write_text((clone / TINY).read_text() + "# edited\n")
    commit(clone, "edit", TINY)
    out = clone.parent / "report.json"
    refused = cli(clone, "--base", "main", "--head", "HEAD", "--format", "json", "--fast", "--output", str(out))
    assert refused.returncode == 1, refused.stderr
    doc = json.loads(out.read_text())
    assert doc == json.loads(refused.stdout) and (doc["verdict"], doc["exit_code"]) == ("failed", 1)
    assert doc["changes"][0]["verdict"] == "refused"
