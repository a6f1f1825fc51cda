"""The rendered model card of a release, as blocks a page can show without fetching anything."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from explorer.checkout import Forge
from explorer.outputs import build_dir, build_outputs
from registry import Registry
from registry.digest import sha256_file
from registry.schema import Release


@dataclass(frozen=True)
class Card:
    status: str  # ok | none | missing | changed | build (rendered by the build, not recorded)
    markdown: str = ""
    front_matter: str = ""
    path: str = ""
    message: str = ""
    blocks: tuple[tuple[str, str, str], ...] = ()  # ("markdown", text, "") | ("image", file, alt text)


_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_DATASET_CARD = re.compile(r"(?:\.\./)*datasets/([a-z0-9][a-z0-9._-]*)/([0-9.]+)/README\.md$")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def split_card(text: str) -> tuple[str, str]:
    """(front matter YAML, markdown body without HTML comments) of a rendered card."""
    m = _FRONT_MATTER.match(text)
    front, body = (m.group(1), text[m.end():]) if m else ("", text)
    return front, _HTML_COMMENT.sub("", body).strip()


def _rewrite_link(m: re.Match) -> str:
    text, target = m.group(1), m.group(2)
    if _EXTERNAL.match(target) or target.startswith("#"):
        return m.group(0)
    ds = _DATASET_CARD.search(target)
    if ds:  # a dataset card next to the model card: its page in the explorer
        return f"[{text}](/dataset?ref=dataset/{ds.group(1)}@{ds.group(2)})"
    return f"{text} (`{target}`)"  # another file of the repository: named, not linked


def card_blocks(markdown: str, base: Path) -> tuple[tuple[str, str, str], ...]:
    """A card's body as blocks the page can show without fetching anything.

    Local images (inside the card's folder) become image blocks; remote images are never
    loaded (the explorer stays offline) and are named instead; relative links to dataset
    cards point at the Dataset page, other relative links are named, not linked.
    """
    base = base.resolve()
    blocks: list[tuple[str, str, str]] = []
    pos = 0

    def text_block(chunk: str) -> None:
        chunk = _LINK.sub(_rewrite_link, chunk)
        if chunk.strip():
            blocks.append(("markdown", chunk, ""))

    for m in _IMAGE.finditer(markdown):
        text_block(markdown[pos:m.start()])
        alt, src = m.group(1), m.group(2)
        target = (base / src).resolve()
        if _EXTERNAL.match(src):
            blocks.append(("markdown", f"*(image not loaded, the explorer stays offline: {alt or src} — `{src}`)*", ""))
        elif target.is_relative_to(base) and target.is_file():
            blocks.append(("image", str(target), alt))
        else:
            blocks.append(("markdown", f"*(image missing: `{src}`)*", ""))
        pos = m.end()
    text_block(markdown[pos:])
    return tuple(blocks)


def _card_from_file(path: Path, status: str, rel: str, message: str = "") -> Card:
    front, body = split_card(path.read_text(encoding="utf-8", errors="replace"))
    return Card(status, body, front, rel, message, card_blocks(body, path.parent))


def model_card(forge: Forge, reg: Registry, release: Release) -> Card:
    record = reg.card(release)
    if record is None:
        message = (f"No model card has been rendered for {release.ref} yet: the card stage writes "
                   f"model_cards/published/{release.name}/{release.version}/README.md and a card record beside "
                   "the release.")
        folder = build_dir(forge, release)
        built = folder / "card" / "README.md" if folder else None
        outputs = build_outputs(forge, release) if built is not None and built.is_file() else None
        if built is not None and outputs is not None and outputs.matches_release:
            rel = str(built.relative_to(forge.root))
            return _card_from_file(built, "build", rel, message + f" The build of this release rendered one in "
                                   f"{rel}; it is shown below, but it is not part of the release's record.")
        return Card("none", message=message)
    path = forge.root / record.path
    if not path.is_file():
        return Card("missing", path=record.path,
                    message=f"The card record names {record.path}, but that file is not in this checkout.")
    actual = sha256_file(path)
    if actual != record.sha256:
        return _card_from_file(path, "changed", record.path,
                               f"{record.path} changed since it was rendered (sha256 {actual[:12]}…, the record "
                               f"says {record.sha256[:12]}…): what follows is not the card that was recorded.")
    return _card_from_file(path, "ok", record.path)
