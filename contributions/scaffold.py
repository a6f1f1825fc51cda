"""``commonforge new dataset|recipe``: write an entry for a contributor to finish, never a finished one.

    new_dataset(root, "psalms", ["local:registry/local_sources/psalms"], license="CC0-1.0")
    new_recipe(root, "forge-small", parent="recipe/forge-small@1")      # -> recipe/forge-small@2

A dataset is scaffolded from its sources: each is fetched once with its ordinary client
(:func:`pipelines.sources.fetch_new`, through the download cache), its sha256 and size are
recorded, the files inside it are listed (:func:`pipelines.extract.read_members`) and the
``include`` globs and ``extract`` settings that can be inferred are proposed: plain-text files
(no NUL bytes, few control characters), read as UTF-8 where every file decodes, else Latin-1.

What only a person can say (why the data was collected, what it holds, its limits...) is
written as a question that starts with :data:`UNANSWERED`. The schema accepts such a text
(it is long enough to be prose) but :func:`unanswered` finds every one, and the contribution
checks refuse an entry while any is left, so a scaffold can be validated and committed to a
branch but never merged as it is.

A recipe is copied from its parent with a new version (or a new name); the parent is recorded
in the recipe's ``parent`` field (out of the digest when absent, so older recipes keep theirs),
and the recipe is listed in params.yaml (:func:`list_recipe`), which is
where ``dvc repro`` learns what to build.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel

from commonforge.errors import ForgeError, InputError
from pipelines.extract import Member, read_members
from pipelines.sources import Fetched, SourceSpec, fetch_new, parse_source_spec
from registry.catalog import Registry
from registry.refs import Ref, check_name, check_version, version_key
from registry.schema import Dataset, Entry, Extract, Recipe, Source, spdx_ids, utc_now
from registry.yamlio import dump_model

UNANSWERED = "TODO(contributor)"  # starts every question a person still has to answer

# "Datasheets for Datasets" (Gebru et al.): the questions each section answers.
DATASHEET_QUESTIONS: dict[str, str] = {
    "motivation": "Why was this dataset created, and what does it add to the forge?",
    "composition": "What do the documents represent (kind of text, period, authors, languages), "
                   "and is anything missing or over-represented?",
    "collection": "Where do the texts come from, who wrote and published them, and how can a "
                  "reader check the copies against the originals?",
    "preprocessing": "What was done to the text before packaging, and what does the forge's "
                     "pipeline do to it (the include globs, extract settings and processing below)?",
    "uses": "What should the dataset be used for, and what is it unsuited for?",
    "limitations": "Whose voices, which attitudes and which gaps does the text carry?",
    "maintenance": "Who maintains this entry, and what happens when a source changes or disappears?",
}

# Files that are text but not the corpus: package metadata, licenses, code.
_NOT_CORPUS = re.compile(r"^(readme|license|licence|copying|notice|authors|changelog|changes|history|"
                         r"contributing|pkg-info|manifest)(\.|$)", re.IGNORECASE)
_TEXT_SUFFIXES = {".txt", ".text", ""}
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def marker(question: str) -> str:
    """The placeholder text of an unanswered question."""
    return f"{UNANSWERED}: {question}"


def _strings(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _strings(v, f"{prefix}[{i}]")
    elif isinstance(value, str):
        yield prefix, value


def unanswered(entry: Entry | dict[str, Any]) -> list[str]:
    """Dotted paths of the fields still holding an :data:`UNANSWERED` question, in field order.

    E.g. ``["description", "datasheet.motivation", "sources[0].attribution"]``. Takes a
    validated entry or its raw YAML mapping; an empty list means every question is answered.
    """
    return [path for path, text in _strings(entry) if UNANSWERED in text]


@dataclass(frozen=True)
class SourceSummary:
    """What scaffolding found in one source (printed, and shown by review)."""

    id: str
    spec: str
    sha256: str
    size: int  # bytes of the artifact
    files: int  # files inside it
    text_files: int  # the ones proposed in `include`
    text_bytes: int
    encoding: str
    cached: bool


@dataclass(frozen=True)
class Scaffold:
    """An entry written by :func:`new_dataset` or :func:`new_recipe`."""

    ref: str  # e.g. "dataset/psalms@1"
    path: Path  # the entry file
    changed: tuple[Path, ...]  # every file written (the entry, params.yaml for a recipe)
    next_steps: tuple[str, ...]  # what the contributor edits and runs next, in order
    sources: tuple[SourceSummary, ...] = ()
    todo: tuple[str, ...] = field(default=())  # the fields still holding a question


# --- datasets -------------------------------------------------------------------------------


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    return len(_CONTROL.findall(data[:65536])) <= max(1, len(data[:65536]) // 1000)


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _corpus_members(members: list[Member]) -> list[Member]:
    """Text members that look like the corpus (plain-text suffix, not a README or license)."""
    return [m for m in members if _is_text(m.data) and PurePosixPath(m.path).suffix.lower() in _TEXT_SUFFIXES
            and not _NOT_CORPUS.match(PurePosixPath(m.path).name)]


def propose_globs(all_paths: Sequence[str], chosen: Sequence[str]) -> list[str]:
    """Few globs that select exactly ``chosen`` among ``all_paths``: ``dir/*.txt`` where a whole
    folder's files of that suffix are chosen, the file itself otherwise."""
    picked = set(chosen)

    def group(path: str) -> tuple[str, str]:
        p = PurePosixPath(path)
        return (str(p.parent) if str(p.parent) != "." else "", p.suffix)

    globs: list[str] = []
    for key in sorted({group(p) for p in chosen}):
        folder, suffix = key
        together = [p for p in all_paths if group(p) == key]
        if suffix and all(p in picked for p in together) and len(together) > 1:
            globs.append(f"{folder}/*{suffix}" if folder else f"*{suffix}")
        else:
            globs.extend(sorted(p for p in together if p in picked))
    return globs


def _encoding(texts: list[Member]) -> tuple[str, list[str]]:
    """The encoding to propose, and the files to exclude because they do not fit it."""
    bad = [m.path for m in texts if not _decodes(m.data, "utf-8")]
    if not bad:
        return "utf-8", []
    non_ascii_utf8 = [m for m in texts if m.path not in bad and not m.data.isascii()]
    if not non_ascii_utf8:
        return "latin-1", []
    return "utf-8", bad  # mixed: keep the UTF-8 files, leave the others out (and say so)


def _parse(root: Path, text: str | SourceSpec) -> SourceSpec:
    if isinstance(text, SourceSpec):
        return text
    kind, _, rest = text.partition(":")
    if kind == "local" and Path(rest).is_absolute():
        # An absolute path inside the repository is fine on a command line; the entry stores it relative.
        try:
            rest = Path(rest).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            raise InputError(f"source {text!r} is outside the repository {root}",
                             hint="copy the files under registry/local_sources/<dataset>/ and name that folder") from None
        text = f"local:{rest}"
    return parse_source_spec(text)


def _unique_id(spec: SourceSpec, taken: set[str]) -> str:
    base = spec.default_id()
    try:
        check_name(base)
    except ValueError:
        base = spec.kind
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _scaffold_source(spec: SourceSpec, source_id: str, license: str, fetched: Fetched) -> tuple[Source, SourceSummary]:
    listing_source = Source(id=source_id, title=str(spec), sha256=fetched.sha256, license="NOASSERTION",
                            include=["**"], extract=Extract(format="text"), **spec.fields())
    members = read_members(fetched.path, listing_source)
    corpus = _corpus_members(members)
    if not corpus:
        shown = ", ".join(m.path for m in members[:12]) + (" ..." if len(members) > 12 else "")
        raise InputError(f"source {spec}: no plain-text file among its {len(members)} files ({shown})",
                         hint="name a source that holds the text as .txt files; other formats "
                         "(python-string, rdata) are set by hand in an entry")
    encoding, left_out = _encoding(corpus)
    chosen = [m for m in corpus if m.path not in left_out]
    include = propose_globs([m.path for m in members], [m.path for m in chosen])
    text_bytes = sum(len(m.data) for m in chosen)
    summary = SourceSummary(source_id, str(spec), fetched.sha256, fetched.size, len(members), len(chosen),
                            text_bytes, encoding, fetched.cached)
    note = (f"Scaffolded by `commonforge new dataset` on {utc_now()} from {spec}: the artifact is "
            f"{fetched.size:,} bytes and holds {len(members)} files; the {len(chosen)} plain-text files "
            f"({text_bytes:,} bytes, {encoding}) are included.")
    if left_out:
        note += f" Left out as not UTF-8: {', '.join(left_out)}."
    attribution = marker("the attribution text the license asks for (authors, title, source, license)") \
        if any("BY" in i.split("-") for i in spdx_ids(license)) else None
    source = Source(
        id=source_id,
        title=spec.package and f"{spec.package} {spec.version} ({spec.kind})" or str(spec),
        sha256=fetched.sha256, license=license, include=include,
        extract=Extract(format="text", encoding=encoding), exclude=sorted(left_out),
        attribution=attribution, notes=note, **spec.fields(),
    )
    return source, summary


def entry_file(root: Path, kind: str, name: str, version: str) -> Path:
    return Registry(root).entry_path(Ref(kind, name, version))  # type: ignore[arg-type]


def _check_new(root: Path, kind: str, name: str, version: str) -> Path:
    try:
        check_name(name)
        check_version(version)
    except ValueError as err:
        raise InputError(str(err)) from None
    path = entry_file(root, kind, name, version)
    if path.exists():
        existing = Registry(root).versions(kind, name)  # type: ignore[arg-type]
        nxt = str(version_key(existing[-1])[0] + 1) if existing else "2"
        raise InputError(f"{kind}/{name}@{version} already exists ({path.relative_to(root)})",
                         hint=f"entries are never overwritten: scaffold a new version (--version {nxt}) or another name")
    return path


def _write_new(path: Path, text: str) -> None:
    """Create ``path``; an existing file is never replaced (another writer got there first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise InputError(f"{path} already exists", hint="entries are never overwritten: pick a new version") from None


def new_dataset(root: Path, name: str, sources: Sequence[str | SourceSpec], *, license: str,
                title: str | None = None, version: str = "1", cache: Path | None = None) -> Scaffold:
    """Fetch each source once, propose what to read from it, write ``datasets/NAME/VERSION.yaml``.

    ``sources`` are ``KIND:SPEC`` strings (:func:`pipelines.sources.parse_source_spec`).
    ``license`` is the dataset's SPDX expression and, until the contributor says otherwise,
    each source's. Nothing is written unless every source was fetched and read.
    """
    root = Path(root).resolve()
    path = _check_new(root, "dataset", name, version)
    if not sources:
        raise InputError("a dataset needs at least one --source", hint="e.g. --source local:registry/local_sources/psalms")
    try:
        ids = spdx_ids(license)
    except ValueError as err:
        raise InputError(f"--license: {err}", hint="an SPDX expression, e.g. CC0-1.0 or CC-BY-4.0") from None
    if not ids:
        raise InputError(f"--license {license!r} names no license", hint="e.g. CC0-1.0 or CC-BY-4.0")
    if cache is None:
        from commonforge.settings import Settings

        cache = Settings.load(root).source_cache
    specs = [_parse(root, s) for s in sources]  # every spec parsed before anything is fetched
    taken: set[str] = set()
    built, summaries = [], []
    for spec in specs:
        fetched = fetch_new(spec, root=root, cache=cache)
        source, summary = _scaffold_source(spec, _unique_id(spec, taken), license, fetched)
        built.append(source)
        summaries.append(summary)
    found = "; ".join(f"{s.id}: {s.text_files} plain-text files, {s.text_bytes:,} bytes ({s.encoding})"
                      for s in summaries)
    datasheet = {k: marker(q) for k, q in DATASHEET_QUESTIONS.items()}
    datasheet["composition"] = marker(f"{DATASHEET_QUESTIONS['composition']} (found: {found})")
    try:
        dataset = Dataset(
            name=name, version=version,
            title=title or marker("a one-line title"),
            description=marker("two or three sentences: what the text is, how much of it, and why it is here"),
            license=license, sources=built, datasheet=datasheet,
        )
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        raise InputError(f"the scaffolded entry does not validate: {err}",
                         hint="check --license and the sources") from None
    rel = path.relative_to(root).as_posix()
    header = (f"# Scaffolded by `commonforge new dataset`. Answer every {UNANSWERED} question (the checks\n"
              f"# refuse the entry until none is left), check include/exclude/extract, then\n"
              f"# `commonforge contribute {rel}`.\n")
    _write_new(path, header + dump_model(dataset))
    todo = tuple(unanswered(dataset))
    steps = (f"edit {rel}: answer the {len(todo)} {UNANSWERED} questions ({', '.join(todo)})",
             f"check each source's include/exclude globs and extract settings in {rel} against its files",
             *([f"leave {', '.join(local)} as it is: the entry pins its sha256 (contribute commits it too)"]
               if (local := [s.path for s in built if s.path]) else []),
             f"commonforge contribute {rel} [--push REMOTE]")
    return Scaffold(dataset.ref, path, (path,), steps, tuple(summaries), todo)


# --- recipes --------------------------------------------------------------------------------


def parent_of(text: str) -> str | None:
    """The parent ref a recipe's YAML records (its ``parent`` field), if any."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    parent = data.get("parent") if isinstance(data, dict) else None
    return parent if isinstance(parent, str) else None


def _flow(name: str, item: dict[str, Any]) -> str:
    def scalar(v: Any) -> str:
        s = str(v)
        return f'"{s}"' if not re.fullmatch(r"[A-Za-z0-9_-]+", s) else s

    return f"  {name}: {{" + ", ".join(f"{k}: {scalar(v)}" for k, v in item.items()) + "}"


def list_recipe(params_text: str, recipe: Recipe) -> str:
    """params.yaml with ``recipe`` listed: under recipes, its datasets under datasets, each pair
    under training_data. A new version of a listed recipe replaces the old one (params.yaml
    builds one version per name). The leading comment is kept; the sections keep their
    one-line ``name: {version: N}`` form. A dataset other recipes use at another version is
    an InputError (one version per dataset name)."""
    data = yaml.safe_load(params_text) or {}
    if not isinstance(data, dict):
        raise InputError("params.yaml is not a mapping", hint="restore params.yaml from git")
    sections = {k: dict(data.get(k) or {}) for k in ("datasets", "recipes", "training_data")}
    datasets, recipes, training = sections["datasets"], sections["recipes"], sections["training_data"]
    recipes[recipe.name] = {"version": recipe.version}
    wanted = []
    for ref in recipe.datasets:
        d = Ref.parse(ref)
        have = datasets.get(d.name)
        if have is not None and str(have.get("version")) != d.version:
            users = [k.split(".", 1)[0] for k, v in training.items()
                     if v.get("dataset") == d.name and v.get("recipe") != recipe.name]
            if users:
                raise InputError(
                    f"{recipe.ref} uses {ref}, but params.yaml builds {d.name}@{have.get('version')} for "
                    f"{', '.join(sorted(users))}",
                    hint="params.yaml builds one version per dataset name: use that version, or give the new data another name")
        datasets[d.name] = {"version": d.version}
        key = f"{recipe.name}.{d.name}"
        training[key] = {"recipe": recipe.name, "dataset": d.name}
        wanted.append(key)
    for key in [k for k, v in training.items() if v.get("recipe") == recipe.name and k not in wanted]:
        del training[key]  # the previous version trained on data this one does not use
    header = []
    for line in params_text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    out = list(header)
    for section in ("datasets", "recipes", "training_data"):
        out.append(f"{section}:")
        out.extend(_flow(n, dict(item)) for n, item in sections[section].items())
    rest = {k: v for k, v in data.items() if k not in sections}
    text = "\n".join(out) + "\n"
    if rest:
        text += yaml.safe_dump(rest, sort_keys=False, default_flow_style=False)
    return text


def new_recipe(root: Path, name: str, *, parent: str, version: str | None = None) -> Scaffold:
    """Copy ``parent`` to ``recipes/NAME/VERSION.yaml`` to edit, and list it in params.yaml.

    ``version`` defaults to the next major version of NAME (1 for a new name). The copy's
    description becomes a question (what changes from the parent, and why) so that the
    contributor says it before the recipe can be merged.
    """
    root = Path(root).resolve()
    registry = Registry(root)
    ref = Ref.parse(parent, default_kind="recipe")
    if ref.kind != "recipe" or not ref.pinned:
        raise InputError(f"--from {parent!r} does not name one recipe", hint="e.g. --from recipe/forge-small@1")
    source = registry.recipe(str(ref))
    if version is None:
        existing = registry.versions("recipe", name)
        version = str(version_key(existing[-1])[0] + 1) if existing else "1"
    path = _check_new(root, "recipe", name, version)
    params_path = root / "params.yaml"
    if not params_path.is_file():
        raise InputError(f"{params_path} is missing", hint="restore params.yaml from git")
    copy = Recipe.model_validate({
        **source.model_dump(mode="json"), "name": name, "version": version,
        "description": marker(f"what this recipe changes from {source.ref}, and why. The parent says: "
                              f"{source.description}"),
        "parent": source.ref,
    })
    params = list_recipe(params_path.read_text(encoding="utf-8"), copy)
    rel = path.relative_to(root).as_posix()
    header = (f"# Scaffolded by `commonforge new recipe` from {source.ref}. Edit what you change, answer the\n"
              f"# {UNANSWERED} question, then `commonforge contribute {rel}`.\n")
    _write_new(path, header + dump_model(copy))
    try:
        from registry.fsutil import atomic_write_text

        atomic_write_text(params_path, params)
    except (OSError, ForgeError):
        path.unlink()  # both files or neither
        raise
    todo = tuple(unanswered(copy))
    steps = (f"edit {rel}: change what this recipe is about (architecture, training, datasets, ...)",
             f"answer the {UNANSWERED} question in {', '.join(todo)}",
             f"params.yaml now builds {copy.ref} (`commonforge build {name}` tries it locally)",
             f"commonforge contribute {rel} [--push REMOTE]")
    return Scaffold(copy.ref, path, (path, params_path), steps, (), todo)
