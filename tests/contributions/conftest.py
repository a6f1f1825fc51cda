"""Fixtures of the contribution tests (scaffold, submit, review): real git repositories in tmp_path.

``contrib_repos`` is a small forge: the project's dataset and recipe entries, params.yaml and
the license policy (nothing else: no code, no releases) committed on ``main`` in a bare "upstream" repository, and
a contributor's clone of it with a git identity in its own config. Other fixtures of this
package (tests/contributions/gitrepos.py) are not these.
"""

from __future__ import annotations

import shutil
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
