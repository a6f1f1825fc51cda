"""The schema and cross-reference check of one added entry, every problem with its file and line.

``commonforge validate`` stops at the first file that does not load and names fields; a pull
request's reviewer wants every problem at once, at its line, with what to do. So this check
parses the YAML with node marks (:func:`yaml.compose`), validates it with the registry's own
pydantic models (nothing here repeats a rule of :mod:`registry.schema`: a recipe whose heads
do not divide its hidden size is refused by ``Architecture``, and this only places the message
on the line of the field it names), then resolves the entry's references in the checkout.

    check_schema(CheckInput)      datasets, recipes, releases and the records beside them
    check_questions(CheckInput)   the questions `commonforge new` left for a person (datasheet...)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from commonforge.errors import ForgeError
from contributions.report import CheckInput, CheckResult, Problem
from registry.schema import ENTRY_TYPES, RECORD_SUFFIXES, Dataset, Entry, Recipe
from registry.yamlio import MAX_ENTRY_BYTES, node_at, parse_yaml

SCHEMA_FILE = "registry/schema.py"


# --- where a field is --------------------------------------------------------------------------


def _named_key_line(node: yaml.Node | None, message: str) -> int | None:
    """Where a model validator's message names a key of the mapping it is about, that key's line.

    ``Architecture`` reports "hidden_size 100 is not divisible by num_attention_heads 3" at
    ``architecture``: the line that needs the edit is ``hidden_size``'s (the first key named).
    """
    if not isinstance(node, yaml.MappingNode):
        return None
    best: tuple[int, int] | None = None  # (position in the message, line)
    for key, _ in node.value:
        m = re.search(rf"(?<![\w.]){re.escape(str(key.value))}(?![\w])", message)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), key.start_mark.line + 1)
    return best[1] if best else None


def _fix_for(error: Mapping[str, Any], model: type[BaseModel]) -> str:
    field = ".".join(str(p) for p in error["loc"])
    if error["type"] == "missing":
        return f"add `{field}` ({model.__name__} in {SCHEMA_FILE} says what it holds)"
    if error["type"] == "extra_forbidden":
        return f"remove `{field}` or correct its spelling: {model.__name__} (schema version 1) has no such field"
    return f"correct the value; the rule is {model.__name__}'s in {SCHEMA_FILE}"


def validation_problems(err: ValidationError, model: type[BaseModel], path: str,
                        node: yaml.Node | None) -> list[Problem]:
    """A pydantic error as problems, each at the line of the field it is about."""
    problems = []
    for e in err.errors():
        loc = tuple(e["loc"])
        field = ".".join(str(p) for p in loc) or "(top level)"
        line, found = node_at(node, loc)
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (not in schema version 1)"
        elif e["type"] == "missing":
            msg = "missing required field"
        else:
            line = _named_key_line(found, msg) or line
        problems.append(Problem(f"{field}: {msg}", fix=_fix_for(e, model), path=path, line=line))
    return problems


# --- which model a path holds ------------------------------------------------------------------


def model_for(path: str) -> type[BaseModel] | None:
    """The registry model the file at ``path`` (repository-relative) holds; None for statements."""
    from contributions.diff import classify_path

    change = classify_path(path)
    if change.kind in ("dataset", "recipe", "conversion"):
        return ENTRY_TYPES[change.kind]
    if change.kind == "release":
        return ENTRY_TYPES["model"]
    if change.kind == "record":
        suffix = Path(path).name.split(".")[-2]
        return RECORD_SUFFIXES[suffix]
    return None


def _read(inp: CheckInput) -> tuple[Any, yaml.Node | None, list[Problem]]:
    """The file's data and node tree, or the problems that stop it from being read."""
    file = inp.root / inp.path
    if file.is_symlink():
        return None, None, [Problem("is a symlink", fix="commit the entry as a plain file", path=inp.path)]
    if not file.is_file():
        return None, None, [Problem("the file is missing in the checked head", path=inp.path)]
    if file.stat().st_size > MAX_ENTRY_BYTES:
        return None, None, [Problem(f"{file.stat().st_size} bytes: too large for an entry (limit {MAX_ENTRY_BYTES})",
                                    fix="entries hold metadata; keep data in pinned sources", path=inp.path)]
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        return None, None, [Problem(f"not UTF-8 text (byte {err.start})", fix="save the entry as UTF-8", path=inp.path)]
    try:
        data, node = parse_yaml(text, inp.path)
    except ForgeError as err:
        m = re.match(rf"^{re.escape(inp.path)}:(\d+)(?::\d+)?: (.*)$", err.message, re.S)
        line, message = (int(m[1]), m[2]) if m else (None, err.message)
        return None, None, [Problem(message, fix=err.hint, path=inp.path, line=line)]
    if not isinstance(data, dict):
        return None, None, [Problem(f"expected a mapping at the top level, got {type(data).__name__}",
                                    fix=f"compare with an existing entry and {SCHEMA_FILE}", path=inp.path, line=1)]
    return data, node, []


# --- the checks --------------------------------------------------------------------------------


def check_schema(inp: CheckInput) -> CheckResult:
    """The entry loads with the registry's models, sits at its own path, and its references resolve."""
    model = model_for(inp.path)
    if model is None:
        return CheckResult.skipped("schema", f"{inp.path} holds no registry entry or record")
    data, node, problems = _read(inp)
    if problems:
        return CheckResult.failed("schema", f"{inp.path} cannot be read", problems)
    if data.get("schema_version") not in (None, 1):
        line, _ = node_at(node, ("schema_version",))
        return CheckResult.failed("schema", "unknown schema version", [Problem(
            f"schema_version {data.get('schema_version')!r}: this commonforge reads schema version 1",
            fix="write the entry for schema version 1", path=inp.path, line=line)])
    try:
        entry = model.model_validate(data)
    except ValidationError as err:
        problems = validation_problems(err, model, inp.path, node)
        return CheckResult.failed("schema", f"{len(problems)} problem(s) against the {model.__name__} schema", problems)
    if isinstance(entry, Entry):
        problems += _path_problems(inp, entry, node)
    problems += _reference_problems(inp, entry, node)
    if problems:
        return CheckResult.failed("schema", f"valid {model.__name__}, but {len(problems)} problem(s) with its "
                                            "place or references", problems)
    what = getattr(entry, "ref", None) or model.__name__
    return CheckResult.passed("schema", f"{what}: valid {model.__name__}, every reference resolves")


def _path_problems(inp: CheckInput, entry: Entry, node: yaml.Node | None) -> list[Problem]:
    """The file must be <kind>s/<name>/<version>.yaml of what it declares (the catalog finds it there)."""
    parts = Path(inp.path).parts
    name, version = parts[-2], Path(inp.path).name[: -len(".yaml")]
    problems = []
    for field, declared, expected in (("name", entry.name, name), ("version", entry.version, version)):
        if declared != expected:
            problems.append(Problem(f"{field}: declares {declared!r}, but the file's path says {expected!r}",
                                    fix=f"set {field}: {expected!r}, or move the file to match",
                                    path=inp.path, line=node_at(node, (field,))[0]))
    return problems


def _reference_problems(inp: CheckInput, entry: BaseModel, node: yaml.Node | None) -> list[Problem]:
    from registry.catalog import Registry
    from registry.fsutil import resolve_inside

    reg = Registry(inp.root)
    problems = []
    if isinstance(entry, Recipe):
        parent = entry.parent  # the recipe `commonforge new recipe` copied it from
        if parent:
            try:
                reg.recipe(parent)
            except ForgeError as err:
                problems.append(Problem(f"parent: {parent}: {err.message}",
                                        fix=err.hint or "name the recipe this one was copied from, or leave parent out",
                                        path=inp.path, line=node_at(node, ("parent",))[0]))
        for i, ref in enumerate(entry.datasets):
            try:
                reg.dataset(ref)
            except ForgeError as err:
                problems.append(Problem(f"datasets[{i}]: {ref}: {err.message}",
                                        fix=err.hint or "name a dataset in the registry, or add it in this change",
                                        path=inp.path, line=node_at(node, ("datasets", i))[0]))
    elif isinstance(entry, Dataset):
        for i, s in enumerate(entry.sources):
            if s.kind != "local" or not s.path:
                continue
            line = node_at(node, ("sources", i, "path"))[0]
            try:
                if not resolve_inside(reg.root, s.path, what=f"source {s.id} path").exists():
                    problems.append(Problem(f"sources[{i}].path: {s.path} does not exist in this checkout",
                                            fix="commit the source's files in the same change", path=inp.path, line=line))
            except ForgeError as err:
                problems.append(Problem(f"sources[{i}].path: {err.message}", fix=err.hint, path=inp.path, line=line))
    else:  # releases and records: the registry's own whole-checkout validation, this file's part of it
        own = _ref_of(inp.path)
        for message in reg.validate():
            if inp.path in message or (own and (message.startswith(f"{own}:") or f" {own} " in message)):
                problems.append(Problem(message, fix="a release and its records are written by `commonforge release`; "
                                        "rebuild rather than edit", path=inp.path))
    return problems


def _ref_of(path: str) -> str | None:
    from contributions.diff import classify_path

    return classify_path(path).ref


def _loc(dotted: str) -> tuple[Any, ...]:
    """``"sources[0].attribution"`` -> ``("sources", 0, "attribution")``."""
    return tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", dotted))


def check_questions(inp: CheckInput) -> CheckResult:
    """The questions ``commonforge new`` asked (a dataset's datasheet, a recipe's description...)
    that are still unanswered, each at its line.

    The scaffold (:mod:`contributions.scaffold`) owns the marker and finds the questions; where
    this checkout has no scaffold the check is skipped, never passed.
    """
    try:
        from contributions.scaffold import UNANSWERED, unanswered
    except ImportError:
        return CheckResult.skipped("questions", "not available in this checkout (contributions.scaffold is missing)",
                                   skip="unavailable")
    data, node, problems = _read(inp)
    if problems:
        return CheckResult.failed("questions", f"{inp.path} cannot be read", problems)
    open_questions = unanswered(data)
    if not open_questions:
        return CheckResult.passed("questions", "every question the scaffold asked is answered")
    for dotted in open_questions:
        problems.append(Problem(f"{dotted}: still the scaffold's {UNANSWERED} question",
                                fix="answer it in your own words: what a reader of the card needs to know",
                                path=inp.path, line=node_at(node, _loc(dotted))[0]))
    return CheckResult.failed("questions", f"{len(problems)} question(s) unanswered", problems,
                              unanswered=open_questions)
