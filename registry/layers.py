"""The registry's layers: the checkout (reviewed in git) over the user's own registry (pulled
releases, outside every repository).

A pull never writes into a checkout: its entries would dirty the git tree (and ``release``
refuses a dirty tree), and a person who only wants to run a model has no clone at all. So pulled
releases go into the user registry (``commonforge.settings.user_root``), a directory laid out as
a checkout's registry is (``registry/entries``, ``registry/governance``, ``.forge/store``). The
read-only commands (list, show, verify, serve, chat, generate, eval) look in the checkout first,
then in the user registry, and say which one a release is in. With no checkout, the user registry
stands alone (``settings.find_root`` falls back to it).
"""

from __future__ import annotations

from pathlib import Path

from commonforge import settings

CHECKOUT = "checkout"
USER = "user registry"


def layer_roots(root: Path) -> list[Path]:
    """``root`` (the checkout, or the user registry itself), then the user registry when it exists."""
    roots = [Path(root)]
    user = settings.user_root()
    if (user / settings.ENTRIES_DIR).is_dir() and not settings.is_user_root(root):
        roots.append(user)
    return roots


def layer_name(root: Path) -> str:
    return USER if settings.is_user_root(root) else CHECKOUT
