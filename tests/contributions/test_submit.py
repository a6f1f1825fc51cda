"""``commonforge contribute`` (contributions.submit) on real git: a bare upstream and a contributor's clone."""

from __future__ import annotations

from pathlib import Path

import git
import pytest
import yaml

from commonforge.errors import InputError, VerificationError
from contributions.report import CheckResult, Problem
from contributions.scaffold import UNANSWERED, new_dataset, new_recipe
from contributions.submit import contribute
from tests.contributions.conftest import CONTRIB_EMAIL, CONTRIB_NAME

PSALMS_ENTRY = "registry/entries/datasets/psalms/1.yaml"


def answer(path: Path) -> None:
    """Answer every TODO(contributor) question of an entry, as a contributor would."""

    def walk(value):
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and UNANSWERED in value:
            return "An answer the contributor wrote, long enough to be read as prose."
        return value

    path.write_text(yaml.safe_dump(walk(yaml.safe_load(path.read_text())), sort_keys=False))


class Recorder:
    """A stand-in for contributions.check.run_checks: records its calls, returns fixed results."""

    def __init__(self, *results: CheckResult) -> None:
        self.results = list(results) or [CheckResult.passed("schema", "1 entry valid")]
        self.calls: list[tuple[Path, list[str]]] = []

    def __call__(self, root: Path, paths: list[str]):
        self.calls.append((root, paths))
        return self.results


@pytest.fixture
def contrib_psalms_entry(contrib_repos, contrib_psalms) -> str:
    new_dataset(contrib_repos.clone, "psalms", ["local:registry/local_sources/psalms"], license="CC0-1.0",
                cache=contrib_repos.clone / ".cache")
    answer(contrib_repos.clone / PSALMS_ENTRY)
    return PSALMS_ENTRY


def test_a_dataset_is_committed_alone_on_a_signed_branch_and_pushed(contrib_repos, contrib_psalms_entry):
    clone, repo = contrib_repos.clone, contrib_repos.repo()
    main_before = repo.heads.main.commit.hexsha
    # Unrelated work in progress: a modified tracked file and a staged one.
    (clone / "params.yaml").write_text((clone / "params.yaml").read_text() + "# my notes\n")
    (clone / "notes.txt").write_text("draft\n")
    repo.index.add(["notes.txt"])
    checks = Recorder()
    made = contribute(clone, [contrib_psalms_entry], push="upstream", checks=checks,
                      description_file=clone.parent / "pr.md")

    assert made.branch == "contrib/dataset-psalms-1"
    assert checks.calls == [(clone, [PSALMS_ENTRY])]
    commit = repo.commit(made.branch)
    assert [p.hexsha for p in commit.parents] == [main_before]
    changed = sorted(commit.stats.files)
    assert changed == [PSALMS_ENTRY, "registry/local_sources/psalms/README.md",
                       "registry/local_sources/psalms/psalm_1.txt", "registry/local_sources/psalms/psalm_2.txt"]
    assert commit.message.startswith("Add dataset/psalms@1\n")
    assert commit.message.rstrip().endswith(f"Signed-off-by: {CONTRIB_NAME} <{CONTRIB_EMAIL}>")
    assert (commit.author.name, commit.author.email) == (CONTRIB_NAME, CONTRIB_EMAIL)
    # Pushed: upstream has the branch at that commit, and its main did not move.
    upstream = git.Repo(contrib_repos.upstream)
    assert upstream.commit(made.branch).hexsha == commit.hexsha == made.commit
    assert upstream.heads.main.commit.hexsha == main_before
    # The contributor's tree, index and branch are as they were.
    assert repo.active_branch.name == "main" and repo.heads.main.commit.hexsha == main_before
    assert [d.a_path for d in repo.index.diff(None)] == ["params.yaml"]  # still modified, not staged
    assert [d.a_path for d in repo.index.diff("HEAD")] == ["notes.txt"]  # still staged
    assert (clone / "params.yaml").read_text().endswith("# my notes\n")
    assert "params.yaml" in made.left_out and "notes.txt" in made.left_out
    # The pull request's description: what, licenses, sizes, the check report.
    text = (clone.parent / "pr.md").read_text()
    assert text == made.description
    assert "**dataset/psalms@1**" in text and "license `CC0-1.0`" in text
    size = sum(f.stat().st_size for f in (clone / "registry/local_sources/psalms").iterdir())
    assert f"{size:,} bytes in 3 files" in text
    assert "| schema | passed | 1 entry valid |" in text


def test_a_recipe_is_committed_with_params_yaml_listing_it_and_nothing_else_of_params(contrib_repos):
    clone, repo = contrib_repos.clone, contrib_repos.repo()
    new_recipe(clone, "forge-small", parent="recipe/forge-small@1")
    answer(clone / "registry/entries/recipes/forge-small/2.yaml")
    (clone / "params.yaml").write_text((clone / "params.yaml").read_text() + "# unrelated edit\n")
    made = contribute(clone, ["recipe/forge-small@2"], checks=Recorder())
    commit = repo.commit(made.branch)
    assert made.branch == "contrib/recipe-forge-small-2"
    assert sorted(commit.stats.files) == ["params.yaml", "registry/entries/recipes/forge-small/2.yaml"]
    committed = commit.tree["params.yaml"].data_stream.read().decode()
    assert yaml.safe_load(committed)["recipes"]["forge-small"] == {"version": 2}
    assert "# unrelated edit" not in committed
    assert made.description_path == Path(repo.git_dir) / "commonforge" / "contrib-recipe-forge-small-2.md"
    assert made.pushed_to is None and "contrib/recipe-forge-small-2" not in [r.name for r in repo.remote("upstream").refs]


def test_an_existing_branch_is_refused(contrib_repos, contrib_psalms_entry):
    repo = contrib_repos.repo()
    repo.create_head("contrib/dataset-psalms-1")
    with pytest.raises(InputError, match="branch contrib/dataset-psalms-1 already exists"):
        contribute(contrib_repos.clone, [contrib_psalms_entry], checks=Recorder())
    assert repo.heads["contrib/dataset-psalms-1"].commit == repo.heads.main.commit  # untouched


def test_a_missing_git_identity_is_refused_with_how_to_set_it(contrib_repos, contrib_psalms_entry):
    repo = contrib_repos.repo()
    with repo.config_writer() as cfg:
        cfg.remove_section("user")
    with pytest.raises(InputError, match="user.name and user.email unset") as err:
        contribute(contrib_repos.clone, [contrib_psalms_entry], checks=Recorder())
    assert "git config --global user.name" in (err.value.hint or "")
    assert [h.name for h in repo.heads] == ["main"]


def test_an_entry_already_on_main_is_refused(contrib_repos):
    with pytest.raises(InputError, match="already in main"):
        contribute(contrib_repos.clone, ["registry/entries/datasets/tiny-local/1.yaml"], checks=Recorder())


def test_unanswered_questions_and_failed_checks_commit_nothing(contrib_repos, contrib_psalms):
    clone, repo = contrib_repos.clone, contrib_repos.repo()
    new_dataset(clone, "psalms", ["local:registry/local_sources/psalms"], license="CC0-1.0", cache=clone / ".c")
    with pytest.raises(InputError, match="TODO\\(contributor\\) question\\(s\\) are still unanswered") as err:
        contribute(clone, [PSALMS_ENTRY], checks=Recorder())
    assert "dataset/psalms@1: datasheet.motivation" in err.value.message
    answer(clone / PSALMS_ENTRY)
    failing = Recorder(CheckResult.failed("licenses", "1 problem", [Problem("NonCommercial", fix="relicense")]))
    with pytest.raises(VerificationError, match="fast checks failed") as err:
        contribute(clone, [PSALMS_ENTRY], checks=failing)
    assert "| licenses | failed | 1 problem |" in err.value.message
    assert [h.name for h in repo.heads] == ["main"]


def test_the_real_fast_checks_run_and_their_report_is_the_description(contrib_repos, contrib_psalms_entry):
    from contributions.submit import fast_checks

    made = contribute(contrib_repos.clone, [contrib_psalms_entry], checks=fast_checks)
    assert "commonforge check: passed" in made.description
    assert "| `dataset/psalms@1` | questions | ✅ passed |" in made.description
