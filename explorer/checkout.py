"""The checkout the explorer browses: its root, store, MLflow URI and the explorer's cache folder."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from commonforge.errors import InputError
from commonforge.settings import ENTRIES_DIR, Settings
from registry import Registry, Store


@dataclass(frozen=True)
class Forge:
    """The paths of one checkout the explorer reads (hashable: a cache key)."""

    root: Path
    store_dir: Path
    mlflow_uri: str
    cache_dir: Path  # the explorer's own derived files (search indexes); never the registry

    @classmethod
    def load(cls, root: Path | str | None = None) -> Forge:
        """Resolve a checkout like the CLI does (``COMMONFORGE_ROOT`` or the cwd when ``root`` is None)."""
        if root is not None:
            root = Path(root).resolve()
            if not (root / ENTRIES_DIR).is_dir():
                raise InputError(
                    f"{root} is not a commonforge checkout (it has no {ENTRIES_DIR} directory)",
                    hint="start the explorer with --root pointing at your clone",
                )
        settings = Settings.load(root)
        return cls(
            root=settings.root,
            store_dir=settings.store_dir,
            mlflow_uri=settings.mlflow_uri,
            cache_dir=settings.explorer_cache,
        )

    def registry(self) -> Registry:
        return Registry(self.root)

    def store(self) -> Store:
        return Store(self.store_dir)

    @property
    def entries_dir(self) -> Path:
        return self.root / ENTRIES_DIR

    def fingerprint(self) -> str:
        """Changes whenever a file under registry/entries (statements included), the governance policy
        or a rendered card changes: a cache key (so a revocation or a policy change shows at once)."""
        h = hashlib.sha256(f"{self.root}\0{self.store_dir}\0{self.mlflow_uri}".encode())
        for base in (self.entries_dir, self.root / "registry" / "governance", self.root / "model_cards" / "published"):
            if not base.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames.sort()
                for name in sorted(filenames):
                    p = os.path.join(dirpath, name)
                    try:
                        st = os.stat(p)
                    except OSError:
                        continue
                    h.update(f"{p}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
        return h.hexdigest()
