"""YAML in and out of typed entries, with errors that name the file, the line and the field.

Reading is strict: duplicate keys are an error (PyYAML silently keeps the last one), and a
validation error is reported with the line of the offending field. Writing is
deterministic (field order of the model, no flow style), so an entry saved twice is
byte-identical and diffs stay readable in review.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from commonforge.errors import InputError
from registry.fsutil import atomic_write_text

M = TypeVar("M", bound=BaseModel)

MAX_ENTRY_BYTES = 4 << 20  # an entry is reviewed by people: 4 MiB is already absurd


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"duplicate key {key!r} (first on line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def node_at(node: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[int | None, yaml.Node | None]:
    """1-based line of the field at ``loc`` (a pydantic error location) in a composed YAML tree,
    and the node found there. Stops at the deepest part that exists: an unknown key is reported
    at the key itself, a missing one at its parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    node, line = value, key.start_mark.line + 1
                    break
            else:
                return line, node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line, node
    return line, node


def line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the field at ``loc`` in a composed YAML tree (see :func:`node_at`)."""
    return node_at(node, loc)[0]


def _read_text(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_ENTRY_BYTES:
        raise InputError(
            f"{path}: {size} bytes is too large for an entry (limit {MAX_ENTRY_BYTES})",
            hint="entries hold metadata; keep data in pinned sources",
        )
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"{path}: not UTF-8 text (byte {err.start})", hint="save the entry as UTF-8"
        ) from None


def parse_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """Parse YAML text strictly; returns the data and its composed node tree (for line numbers)."""
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(err, "problem", None) or str(err)
        raise InputError(f"{where}: malformed YAML: {problem}", hint="fix the YAML syntax") from None
    return data, node


def format_validation_error(err: ValidationError, source: str, node: yaml.Node | None) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = line_of(node, loc)
        where = f"{source}:{line}" if line else source
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (not in this schema version)"
        elif e["type"] == "missing":
            msg = "missing required field"
        lines.append(f"{where}: {field}: {msg}")
    return "\n".join(lines)


def load_model(model: type[M], path: Path, *, context: dict[str, Any] | None = None) -> M:
    """Read ``path`` and validate it as ``model``; any problem is an :class:`InputError`."""
    text = _read_text(path)
    data, node = parse_yaml(text, str(path))
    return validate_data(model, data, str(path), node, context=context)


def validate_data(
    model: type[M],
    data: Any,
    source: str,
    node: yaml.Node | None = None,
    *,
    context: dict[str, Any] | None = None,
) -> M:
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    if "schema_version" in model.model_fields and data.get("schema_version") not in (None, 1):
        raise InputError(
            f"{source}: unknown schema version {data.get('schema_version')!r}; this commonforge reads schema version 1",
            hint="upgrade commonforge to read newer entries, or write the entry for schema version 1",
        )
    try:
        return model.model_validate(data, context=context)
    except ValidationError as err:
        raise InputError(
            f"{source}: invalid {model.__name__}:\n" + format_validation_error(err, source, node),
            hint="compare the entry with the schema in registry/schema.py",
        ) from None


def dump_model(obj: BaseModel) -> str:
    data = obj.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)


def save_model(obj: BaseModel, path: Path) -> None:
    """Write an entry atomically (temp file, fsync, rename)."""
    atomic_write_text(path, dump_model(obj))
