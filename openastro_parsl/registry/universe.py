"""The dimension universe: named data axes and their relations, declared in YAML.

Declaring dimensions as data (not code) lets a survey add an axis (``night``, ``detector``...) by editing
one file; the registry builds its tables from it and stores the text, so a repository always knows the
universe it was created with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field

from ..errors import DataIdError, UniverseError
from ..yamlconfig import ConfigError, load_yaml, validate

TypeName = Literal["str", "int", "float"]
PY_TYPES: dict[str, type] = {"str": str, "int": int, "float": float}
_RESERVED = {"id", "dataset_type_id", "run_id", "data_id_key", "ingest_date"}


class _KeySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "name"
    type: Literal["str", "int"] = "str"


class _DimensionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doc: str = ""
    key: _KeySpec = Field(default_factory=_KeySpec)
    requires: list[str] = Field(default_factory=list)
    implies: list[str] = Field(default_factory=list)
    metadata: dict[str, TypeName] = Field(default_factory=dict)


class _UniverseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    version: int
    dimensions: dict[str, _DimensionSpec]


@dataclass(frozen=True)
class Dimension:
    """One dimension: its key, the dimensions it requires and implies, the metadata its records carry."""

    name: str
    doc: str
    key_name: str
    key_type: type
    requires: tuple[str, ...]
    implies: tuple[str, ...]
    metadata: Mapping[str, type] = field(default_factory=dict)

    @property
    def related(self) -> tuple[str, ...]:
        """Dimensions whose values a record of this one carries."""
        return self.requires + self.implies


class DimensionUniverse:
    """All dimensions, in a dependency order (a dimension comes after those it requires or implies)."""

    def __init__(self, text: str, source: str = "<universe>"):
        try:
            data, lines = load_yaml(text, source)
            spec = validate(_UniverseSpec, data, source, lines)
        except ConfigError as exc:
            raise UniverseError(str(exc)) from None
        self.text = text
        self.name = spec.name
        self.version = spec.version
        graph: nx.DiGraph[str] = nx.DiGraph()
        for name, dim in spec.dimensions.items():
            graph.add_node(name)
            for other in dim.requires + dim.implies:
                if other not in spec.dimensions:
                    line = lines.get(("dimensions", name), "?")
                    raise UniverseError(
                        f"{source}:{line}: dimension {name!r} refers to unknown dimension {other!r}; "
                        f"known: {', '.join(sorted(spec.dimensions))}"
                    )
                graph.add_edge(other, name)
            clash = (set(dim.metadata) & (set(spec.dimensions) | _RESERVED)) | (
                {dim.key.name} & set(dim.metadata)
            )
            if clash:
                raise UniverseError(f"{source}: dimension {name!r}: metadata name(s) {sorted(clash)} clash "
                                    "with a dimension, the key or a reserved column")
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle:
            path = " -> ".join([cycle[0][1]] + [b for _, b in cycle])
            raise UniverseError(f"{source}: dimensions form a cycle: {path}")
        order = list(nx.lexicographical_topological_sort(graph))
        self._dims: dict[str, Dimension] = {}
        for name in order:
            d = spec.dimensions[name]
            self._dims[name] = Dimension(
                name=name, doc=d.doc, key_name=d.key.name, key_type=PY_TYPES[d.key.type],
                requires=tuple(d.requires), implies=tuple(d.implies),
                metadata={k: PY_TYPES[v] for k, v in d.metadata.items()},
            )
        self._order = {name: i for i, name in enumerate(order)}
        self._cache: dict[tuple[str, frozenset], tuple[str, ...]] = {}

    @classmethod
    def default(cls) -> "DimensionUniverse":
        text = resources.files("openastro_parsl.registry").joinpath("dimensions.yaml").read_text()
        return cls(text, "openastro_parsl/registry/dimensions.yaml")

    @classmethod
    def from_file(cls, path: str | Path) -> "DimensionUniverse":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise UniverseError(f"{path}: cannot read: {exc.strerror}") from None
        return cls(text, str(path))

    def metadata_added_since(self, older: "DimensionUniverse") -> list[tuple[str, str, type]] | None:
        """The metadata columns this universe adds to ``older``, if that is all it changes; else None.

        Such a change needs only new nullable columns, so a repository made with ``older`` can be brought up to
        date in place; anything else (a dimension added, a key or relation changed) cannot.
        """
        if self.name != older.name or self.version <= older.version or self.names != older.names:
            return None
        added = []
        for new in self:
            old = older[new.name]
            if (new.key_name, new.key_type, new.requires, new.implies) != (
                    old.key_name, old.key_type, old.requires, old.implies):
                return None
            if any(new.metadata.get(k) is not v for k, v in old.metadata.items()):
                return None
            added += [(new.name, k, v) for k, v in new.metadata.items() if k not in old.metadata]
        return added

    # -- lookup -------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Dimension:
        try:
            return self._dims[name]
        except KeyError:
            raise DataIdError(f"unknown dimension {name!r}; known dimensions: {', '.join(sorted(self._dims))}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._dims

    def __iter__(self):
        return iter(self._dims.values())

    @property
    def names(self) -> list[str]:
        return list(self._dims)

    # The planner asks these questions once per quantum; the answers are memoised per set of names.
    def _memo(self, kind: str, names: Iterable[str], compute) -> tuple[str, ...]:
        key = (kind, frozenset(names))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = compute(key[1])
        return hit

    def sorted(self, names: Iterable[str]) -> tuple[str, ...]:
        def compute(names):
            for n in names:
                self[n]  # raises a clear error for unknown names
            return tuple(sorted(names, key=self._order.__getitem__))
        return self._memo("sorted", names, compute)

    def _closure(self, names, follow) -> tuple[str, ...]:
        out = set()
        todo = list(names)
        while todo:
            n = todo.pop()
            if n not in out:
                out.add(n)
                todo.extend(follow(self[n]))
        return self.sorted(out)

    def required(self, names: Iterable[str]) -> tuple[str, ...]:
        """``names`` plus everything they require, transitively: the dimensions that identify a data ID."""
        return self._memo("required", names, lambda n: self._closure(n, lambda d: d.requires))

    def expanded(self, names: Iterable[str]) -> tuple[str, ...]:
        """``names`` plus everything they require or imply, transitively: every value a data ID can carry."""
        return self._memo("expanded", names, lambda n: self._closure(n, lambda d: d.related))

    def implied_only(self, names: Iterable[str]) -> tuple[str, ...]:
        def compute(names):
            req = set(self.required(names))
            return tuple(n for n in self.expanded(names) if n not in req)
        return self._memo("implied", names, compute)

    def data_id_order(self, names: Iterable[str]) -> tuple[str, ...]:
        """How a data ID reads best: the identifying dimensions, then the implied ones."""
        return self._memo("order", names, lambda n: self.required(n) + self.implied_only(n))

    @cached_property
    def where_types(self) -> dict[str, dict[str | None, type]]:
        """Per dimension: the type of its value (key ``None``) and of each attribute, for the where language."""
        out: dict[str, dict[str | None, type]] = {}
        for d in self:
            types: dict[str | None, type] = {None: d.key_type, d.key_name: d.key_type}
            types.update(d.metadata)
            out[d.name] = types
        return out

    # -- data IDs -----------------------------------------------------------------------------
    def coerce(self, dimension: str, value: Any) -> Any:
        dim = self[dimension]
        if dim.key_type is int:
            if isinstance(value, bool) or not isinstance(value, (int, str)) or (
                isinstance(value, str) and not value.strip().lstrip("+-").isdigit()
            ):
                raise DataIdError(f"{dimension} must be an integer, got {value!r}")
            return int(value)
        if not isinstance(value, str) or not value:
            raise DataIdError(f"{dimension} must be a non-empty string, got {value!r}")
        return value

    def normalize(self, dimensions: Iterable[str], data_id: Mapping[str, Any], *, what: str = "data ID") -> dict[str, Any]:
        """Check ``data_id`` identifies a point of ``dimensions``: required keys present, right types.

        Implied values (band, field of an exposure) are kept when given but not required; keys outside the
        expanded dimensions are an error, since they usually mean a typo.
        """
        dims = self.required(dimensions)
        allowed = set(self.expanded(dimensions))
        unknown = sorted(set(data_id) - allowed)
        if unknown:
            raise DataIdError(f"{what} {dict(data_id)} has key(s) {unknown} outside its dimensions {list(dims)}")
        missing = [d for d in dims if d not in data_id or data_id[d] is None]
        if missing:
            raise DataIdError(f"{what} {dict(data_id)} lacks {missing} (needs {list(dims)})")
        return {d: self.coerce(d, data_id[d]) for d in self.sorted(data_id) if data_id[d] is not None}

    def data_id_key(self, dimensions: Iterable[str], data_id: Mapping[str, Any]) -> str:
        """A canonical text for the identifying part of a data ID, e.g. ``instrument=lco1m,exposure=1042``."""
        return ",".join(f"{d}={data_id[d]}" for d in self.required(dimensions))
