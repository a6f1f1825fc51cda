"""The checkout the explorer browses: its root, store, MLflow URI and the explorer's cache folder.

The explorer reads the registry layers the read-only commands read (``registry.layers``): the
checkout, then the user's own registry of pulled releases, each with its own store
(:meth:`Forge.layers`, :meth:`Forge.at`). It writes to neither."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from commonforge.errors import InputError
from commonforge.settings import ENTRIES_DIR, Settings
from registry import Registry, Store
from registry.layers import layer_name, layer_roots


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

    @property
    def layer(self) -> str:
        """"checkout" or "user registry": which registry layer this is (registry.layers)."""
        return layer_name(self.root)

    def at(self, root: Path | str) -> Forge:
        """The registry layer at ``root``: this one, or the user registry with its own store (as
        ``Settings.layer`` resolves it); the MLflow URI and the explorer's cache stay this checkout's."""
        root = Path(root).resolve()
        if root == self.root:
            return self
        settings = Settings.load(self.root).layer(root)
        return Forge(root=settings.root, store_dir=settings.store_dir, mlflow_uri=self.mlflow_uri,
                     cache_dir=self.cache_dir)

    def layers(self) -> list[Forge]:
        """This checkout, then the user registry when it exists: where the explorer looks for releases."""
        return [self.at(root) for root in layer_roots(self.root)]

    def fingerprint(self) -> str:
        """Changes whenever a file under registry/entries (statements included), the governance policy
        or a rendered card changes, in the checkout or the user registry (a pull shows at once): a
        cache key (so a revocation or a policy change shows at once)."""
        roots = layer_roots(self.root)
        h = hashlib.sha256("\0".join([str(self.store_dir), self.mlflow_uri, *map(str, roots)]).encode())
        for base in (d for r in roots for d in (r / ENTRIES_DIR, r / "registry" / "governance",
                                                r / "model_cards" / "published")):
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
