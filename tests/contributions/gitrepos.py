"""Real git repositories for the check tests: a small forge on ``main``, a bare upstream, clones.

The forge is a minimal copy of this project: its registry (entries, local sources, governance),
its published cards (the releases' card records name them) and params.yaml, with a stub
pyproject.toml so commonforge finds the checkout; no code. :func:`seed_forge` builds it once per
test module; :func:`upstream_and_clone` gives each test its own bare upstream and contributor
clone, cheaply (git clones of a local repository). Plain functions: each test module makes its
own fixtures from them (pytest loads only conftest.py on its own).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from tests.helpers import REPO

COPIED = ("registry/entries", "registry/local_sources", "registry/governance", "model_cards/published", "params.yaml")
NAME, EMAIL = "Ada Contributor", "ada@example.invalid"


def _git_env() -> dict[str, str]:
    # No global or system git configuration: the tests see the same git on every machine.
    return dict(os.environ, GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1",
                GIT_AUTHOR_NAME=NAME, GIT_AUTHOR_EMAIL=EMAIL, GIT_COMMITTER_NAME=NAME, GIT_COMMITTER_EMAIL=EMAIL)


def repo(root: Path):
    """GitPython's Repo of ``root``, with the tests' identity in its environment."""
    import git

    r = git.Repo(root)
    r.git.update_environment(**{k: v for k, v in _git_env().items() if k.startswith("GIT_")})
    return r


def seed_forge(dest: Path) -> Path:
    """A small forge as a git repository with one commit on ``main`` (the project's tracked files of :data:`COPIED`)."""
    import git

    listed = subprocess.run(["git", "ls-files", "-z", "--", *COPIED], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\x00")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file() and not src.is_symlink():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(src.read_bytes())
    (dest / "pyproject.toml").write_text("[project]\nname = 'forge-under-test'\n", encoding="utf-8")
    git.Repo.init(dest, initial_branch="main")
    r = repo(dest)
    r.git.add("--all")
    r.git.commit("-q", "-m", "the forge")
    return dest


def upstream_and_clone(seed: Path, tmp: Path) -> tuple[Path, Path]:
    """A bare upstream cloned from ``seed`` and a contributor's clone of it (remote ``origin``)."""
    import git

    upstream = tmp / "upstream.git"
    git.Repo.clone_from(str(seed), str(upstream), bare=True, env=_git_env())
    clone = tmp / "clone"
    git.Repo.clone_from(str(upstream), str(clone), env=_git_env())
    return upstream, clone


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def commit(root: Path, message: str, *paths: str) -> str:
    """Stage ``paths`` (additions, changes and deletions) and commit; returns the new sha."""
    r = repo(root)
    r.git.add("--all", "--", *paths)
    r.git.commit("-q", "-m", message)
    return r.head.commit.hexsha


def branch(root: Path, name: str, start: str = "main") -> None:
    repo(root).git.checkout("-q", "-b", name, start)


def entry_text(kind: str, name: str, version: str = "1", **changes) -> str:
    """An existing entry of the project made into ``kind/name@version``: tiny-local for datasets,
    forge-tiny for recipes, with ``changes`` applied (dotted keys: ``architecture.hidden_size``)."""
    src = {"dataset": "registry/entries/datasets/tiny-local/1.yaml",
           "recipe": "registry/entries/recipes/forge-tiny/1.yaml"}[kind]
    data = yaml.safe_load((REPO / src).read_text(encoding="utf-8"))
    data.update(name=name, version=version)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[last] = value
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def entry_path(kind: str, name: str, version: str = "1") -> str:
    return f"registry/entries/{kind}s/{name}/{version}.yaml"
