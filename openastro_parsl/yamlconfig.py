"""Load YAML into pydantic models with errors that name the file, the key and the line.

Pipelines, site configs and the dimension universe are all YAML a person edits; a bare pydantic
traceback is useless to them, so every config goes through ``load_model``. The nodes are walked by hand to
record each key's line, so YAML's merge key (``<<: *defaults``) is applied here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import OpenAstroError

M = TypeVar("M", bound=BaseModel)


class ConfigError(OpenAstroError):
    """A YAML config file is unreadable or does not validate."""


_MERGE = "tag:yaml.org,2002:merge"


def _construct(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        merged: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                _merge_into(merged, value_node, path, lines)
                continue
            key = yaml.safe_load(yaml.serialize(key_node))
            if key in out:
                raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
            out[key] = _construct(value_node, path + (key,), lines)
        return {**merged, **out}
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, path + (i,), lines) for i, v in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def _merge_into(merged: dict, node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    """Apply a merge key, ``<<: *defaults`` or ``<<: [*a, *b]``, into ``merged``.

    As YAML's merge key says, keys written beside ``<<`` win over merged ones (the caller lays them on top) and
    an earlier mapping wins over a later one. Lines of merged keys point where they are written, in the anchored
    mapping, so errors in them still name a line.
    """
    sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
    for src in sources:
        if not isinstance(src, yaml.MappingNode):
            kind = "scalar" if isinstance(src, yaml.ScalarNode) else "sequence"
            raise ConfigError(f"line {src.start_mark.line + 1}: '<<' merges mappings, not {kind}s")
        src_lines: dict[tuple, int] = {}
        for key, value in _construct(src, path, src_lines).items():
            merged.setdefault(key, value)
        for key_path, line in src_lines.items():
            lines.setdefault(key_path, line)


def load_yaml(text: str, source: str = "<string>") -> tuple[Any, dict[tuple, int]]:
    """Parse YAML text; return the data and a map from key path to 1-based line number."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}:{where}: invalid YAML: {problem}") from None
    lines: dict[tuple, int] = {}
    if node is None:
        return None, lines
    try:
        return _construct(node, (), lines), lines
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def describe_validation_error(exc: ValidationError, source: str, lines: dict[tuple, int]) -> str:
    """One line per problem: ``file:line: key.path: message``."""
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        line = None
        for n in range(len(loc), -1, -1):  # deepest known ancestor's line
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        key = ".".join(str(p) for p in loc) or "<top>"
        where = f"{source}:{line}" if line else source
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append(f"{where}: {key}: {msg}")
    return "\n".join(out)


def validate(model: type[M], data: Any, source: str, lines: dict[tuple, int] | None = None) -> M:
    """``data`` (from ``load_yaml``) as ``model``; errors name ``source``, the key and its line."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source, lines or {})) from None


def load_model(model: type[M], path: str | Path) -> M:
    """Read ``path`` and validate it as ``model``; errors name the file, key and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    data, lines = load_yaml(text, str(path))
    return validate(model, data, str(path), lines)
