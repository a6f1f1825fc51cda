"""The checkout as the build sees it: git state, params.yaml, and running DVC.

Helpers shared by ``build``, ``release`` and ``reproduce``; none of them is a stage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from commonforge.errors import BuildError, InputError
from registry.digest import sha256_file
from registry.refs import Ref

# Paths a build or release may change without making the tree differ from its commit:
# DVC's build record and the records the release itself writes.
RELEASE_OUTPUTS = ("dvc.lock", "registry/entries/models/", "model_cards/published/")


@dataclass(frozen=True)
class Params:
    """params.yaml: which datasets and recipes the DVC pipeline builds."""

    datasets: dict[str, str]  # name -> version
    recipes: dict[str, str]  # name -> version
    training_data: dict[str, dict]  # "<recipe>.<dataset>" -> {"recipe": ..., "dataset": ...}

    @classmethod
    def load(cls, root: Path) -> Params:
        path = root / "params.yaml"
        if not path.is_file():
            raise InputError(f"{path} is missing", hint="restore params.yaml from git")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}

        def versions(section: str) -> dict[str, str]:
            raw = data.get(section) or {}
            if not isinstance(raw, dict):
                raise InputError(f"params.yaml: {section} must map names to {{version: N}}")
            return {name: str(item["version"]) for name, item in raw.items()}

        return cls(versions("datasets"), versions("recipes"), dict(data.get("training_data") or {}))

    def recipe_ref(self, name: str) -> str:
        if name not in self.recipes:
            raise InputError(
                f"recipe {name} is not in params.yaml (it builds: {', '.join(self.recipes) or 'nothing'})",
                hint=f"add `{name}: {{version: N}}` under recipes, its datasets under datasets and training_data",
            )
        return f"recipe/{name}@{self.recipes[name]}"

    def problems(self, registry) -> list[str]:
        """Inconsistencies between params.yaml and the recipes it names."""
        out = []
        for name, version in self.recipes.items():
            try:
                recipe = registry.recipe(f"recipe/{name}@{version}")
            except Exception as err:  # noqa: BLE001 - reported, not raised
                out.append(f"params.yaml: recipe {name}@{version}: {err}")
                continue
            for ref in recipe.datasets:
                dataset = Ref.parse(ref)
                dname, dversion = dataset.name, dataset.version
                if self.datasets.get(dname) != dversion:
                    out.append(f"params.yaml: {recipe.ref} uses {ref}, which is not under datasets")
                key = f"{name}.{dname}"
                if self.training_data.get(key) != {"recipe": name, "dataset": dname}:
                    out.append(f"params.yaml: training_data needs `{key}: {{recipe: {name}, dataset: {dname}}}`")
        for key, item in self.training_data.items():
            if item.get("recipe") not in self.recipes or item.get("dataset") not in self.datasets:
                out.append(f"params.yaml: training_data {key} names a recipe or dataset not in params.yaml")
        return out


def lock_digest(root: Path) -> str:
    path = root / "requirements.lock"
    if not path.is_file():
        raise BuildError(f"{path} is missing", hint="restore requirements.lock from git")
    return sha256_file(path)


def git_repo(root: Path):
    import git

    try:
        return git.Repo(root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise InputError(f"{root} is not a git repository", hint="builds are released from a git clone") from None


def head_commit(root: Path) -> str:
    repo = git_repo(root)
    try:
        return repo.head.commit.hexsha
    except ValueError:
        raise InputError(f"{root} has no commits yet", hint="commit the recipe first") from None


def tree_changes(root: Path) -> list[str]:
    """Changed or untracked paths, other than the release's own outputs (see RELEASE_OUTPUTS)."""
    repo = git_repo(root)
    out = repo.git.status("--porcelain", "--untracked-files=all", "-z")
    changes = []
    for item in out.split("\x00"):
        if not item:
            continue
        path = item[3:]
        if any(path == p or path.startswith(p) for p in RELEASE_OUTPUTS):
            continue
        changes.append(item)
    # -z puts a rename's source path in the next item; it is a path too, harmless to list.
    return changes


def child_env() -> dict[str, str]:
    """The environment for DVC and its stage processes: this interpreter's bin first on PATH."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def run_dvc(root: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
    """Run ``dvc ARGS`` in ``root`` (output streamed unless captured); a failure is a BuildError."""
    cmd = [str(Path(sys.executable).parent / "dvc"), *args]
    proc = subprocess.run(cmd, cwd=root, env=child_env(), text=True, capture_output=capture)
    if proc.returncode != 0:
        tail = ((proc.stderr or "") + (proc.stdout or ""))[-2000:] if capture else ""
        raise BuildError(
            f"`dvc {' '.join(args)}` failed with exit code {proc.returncode}" + (f":\n{tail}" if tail else ""),
            hint="read the stage's output above; fix the cause and run the command again",
        )
    return proc


def ensure_dvc_remote(root: Path, remote: Path) -> None:
    """Point this checkout's default DVC remote at ``remote`` (in .dvc/config.local, never committed)."""
    remote.mkdir(parents=True, exist_ok=True)
    local = root / ".dvc" / "config.local"
    wanted = f"['remote \"default\"']\n    url = {remote}\n[core]\n    remote = default\n"
    if local.is_file() and local.read_text() == wanted:
        return
    from registry.fsutil import atomic_write_text

    atomic_write_text(local, wanted)


def recipe_stages(root: Path, recipe_name: str) -> list[str]:
    """The DVC stages of one recipe, in pipeline order, as `dvc repro` targets."""
    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    return [f"{stage}@{recipe_name}" for stage, spec in dvc_yaml["stages"].items()
            if isinstance(spec, dict) and spec.get("foreach") == "${recipes}"]
