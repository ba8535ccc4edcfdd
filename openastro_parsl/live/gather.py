"""When gathering tasks re-run in live mode, over which data IDs, and under which RUN collection.

A gathering task (one without an exposure among its dimensions: co-adds, templates, reference grids, light
curves, period searches) reads many frames' outputs, so it cannot run per frame. Each is re-run when it has
``after`` new inputs or, with at least one, ``every_s`` seconds after its last version, whichever comes first
(``gather={"templateCoadd": {"after": 5, "every_s": 300}}``); inputs are counted by data ID (a frame that adds
a ``photoCalib`` and a ``wcsSolution`` is one new input), and ``max_versions`` caps the versions (1 for a
reference grid that later frames must keep being warped onto). A version re-runs only the data IDs the new inputs
touch (their shared dimensions: a new r-band frame of field demo1 re-makes demo1's r-band co-add, not every
field's), and goes to its own RUN collection ``live/<name>/<task>/<n>``, put first in the CHAINED
``live/<name>`` so later plans find the newest version and the older ones stay readable.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import OpenAstroError
from ..registry.registry import Registry

DEFAULT_AFTER = 10
DEFAULT_EVERY_S = 600.0


class GatherConfigError(OpenAstroError):
    """A live gathering schedule names an unknown task or gives an invalid rule."""


class GatherRule(BaseModel):
    """When one gathering task re-runs: after this many new inputs, or this long after its last version."""

    model_config = ConfigDict(extra="forbid")
    after: int | None = Field(DEFAULT_AFTER, ge=1, description="Re-run once this many new inputs are registered.")
    every_s: float | None = Field(DEFAULT_EVERY_S, gt=0, description="Re-run this long after the last version "
                                                                         "when at least one new input is waiting.")
    max_versions: int | None = Field(None, ge=1, description="Versions at most (none: no limit).")

    @model_validator(mode="after")
    def _one(self):
        if self.after is None and self.every_s is None:
            raise ValueError("give after, every_s or both")
        return self


def parse_rules(gather: Mapping[str, Any] | None, labels: Iterable[str]) -> dict[str, GatherRule]:
    """One rule per gathering task of the pipeline (defaults for those ``gather`` does not name)."""
    labels = list(labels)
    given = dict(gather or {})
    unknown = [k for k in given if k not in labels]
    if unknown:
        raise GatherConfigError(f"gather: {', '.join(repr(k) for k in unknown)} is not a gathering task of the "
                                f"pipeline (gathering tasks: {', '.join(labels) or 'none'})")
    out = {}
    for label in labels:
        try:
            out[label] = GatherRule.model_validate(given.get(label) or {})
        except ValidationError as exc:
            msg = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'rule'}: {e['msg']}" for e in exc.errors())
            raise GatherConfigError(f"gather: task {label!r}: {msg}") from None
    return out


@dataclass
class _Pending:
    inputs: set[tuple] = field(default_factory=set)          # data IDs of new inputs
    touched: dict[tuple, dict] = field(default_factory=dict)  # shared dimension values -> as a data ID


class GatherSchedule:
    """New inputs per gathering task since its last version; which tasks are due and for which data IDs."""

    def __init__(self, rules: dict[str, GatherRule], consumes: dict[str, list[str]],
                 shared_dims: dict[str, tuple[str, ...]], now: float | None = None):
        self.rules = rules
        self.consumes = consumes          # dataset type -> gathering tasks reading it
        self.shared_dims = shared_dims    # task -> its expanded dimensions (a new input's values of them select)
        start = time.time() if now is None else now
        self.last = dict.fromkeys(rules, start)
        self.pending = {label: _Pending() for label in rules}
        self.made = dict.fromkeys(rules, 0)  # versions so far (set from the repository by the engine)

    def note(self, registered: Iterable[tuple[str, str, Mapping[str, Any]]]) -> None:
        """Count newly registered datasets (type, id, data ID) as new inputs of the tasks reading them."""
        for dataset_type, _id, data_id in registered:
            for label in self.consumes.get(dataset_type, ()):
                p = self.pending[label]
                p.inputs.add(tuple(sorted(data_id.items())))
                dims = [d for d in self.shared_dims[label] if d in data_id]
                p.touched.setdefault(tuple(data_id[d] for d in dims), {d: data_id[d] for d in dims})

    def due(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        out = []
        for label, rule in self.rules.items():
            n = len(self.pending[label].inputs)
            if rule.max_versions is not None and self.made[label] >= rule.max_versions:
                continue
            if n and ((rule.after is not None and n >= rule.after)
                      or (rule.every_s is not None and now - self.last[label] >= rule.every_s)):
                out.append(label)
        return out

    def take(self, label: str, now: float | None = None) -> list[dict]:
        """The data ID selections of a version of ``label`` about to be planned; its counters start again."""
        p = self.pending[label]
        self.pending[label] = _Pending()
        self.last[label] = time.time() if now is None else now
        self.made[label] += 1
        return list(p.touched.values())


def selection_where(selections: list[dict], prefix: str = "g") -> tuple[str, dict]:
    """``(a = :g0 AND b = :g1) OR ...`` with the values as binds (never pasted into the text)."""
    terms: list[str] = []
    binds: dict[str, Any] = {}
    for sel in selections:
        if not sel:
            return "", {}  # one selection with no shared dimension: the whole task
        parts = []
        for dim, value in sel.items():
            name = f"{prefix}{len(binds)}"
            binds[name] = value
            parts.append(f"{dim} = {name}")
        terms.append("(" + " AND ".join(parts) + ")")
    return " OR ".join(terms), binds


def version_run(name: str, label: str, n: int) -> str:
    return f"live/{name}/{label}/{n}"


def next_version(registry: Registry, name: str, label: str) -> int:
    """1 + the highest version of ``label`` in the repository (so a restarted engine never reuses one)."""
    pattern = re.compile(rf"^{re.escape(version_run(name, label, 0)[:-1])}(\d+)$")
    found = [int(m.group(1)) for c in registry.query_collections(version_run(name, label, 0)[:-1] + "*")
             if (m := pattern.match(c.name))]
    return 1 + max(found, default=0)
