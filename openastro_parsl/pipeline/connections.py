"""Connections: what a task reads and writes, declared once on the class.

The planner reads these declarations (never the task's code) to wire quanta together, so a task's dataset
types, their dimensions and storage classes must be spelled out here, and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator


@dataclass(frozen=True)
class Connection:
    """One named input or output of a task (the name is the keyword ``run`` receives or returns)."""

    dataset_type: str
    dimensions: tuple[str, ...]
    storage_class: str
    multiple: bool = False
    doc: str = ""
    kind: str = "input"  # input | prerequisite | output
    name: str = ""       # filled in from the attribute name
    minimum: int = 1     # fewest datasets a `multiple` input needs for the quantum to run
    lazy: bool = False   # read memory-mapped (images): a gathering task touches one chunk at a time

    def renamed(self, dataset_type: str) -> "Connection":
        return replace(self, dataset_type=dataset_type)


def Input(dataset_type: str, dimensions, storage_class: str, *, multiple: bool = False, doc: str = "",
          minimum: int = 1, lazy: bool = False) -> Connection:
    """``lazy=True`` hands the task memory-mapped images, so a co-add of hundreds of frames stays within its
    memory cap by reading one chunk of each at a time."""
    return Connection(dataset_type, tuple(dimensions), storage_class, multiple, doc, "input", minimum=minimum,
                      lazy=lazy)


def PrerequisiteInput(dataset_type: str, dimensions, storage_class: str, *, multiple: bool = False,
                      doc: str = "") -> Connection:
    """An input that must already exist in the input collections (a reference catalogue, a calibration)."""
    return Connection(dataset_type, tuple(dimensions), storage_class, multiple, doc, "prerequisite")


def Output(dataset_type: str, dimensions, storage_class: str, *, doc: str = "") -> Connection:
    return Connection(dataset_type, tuple(dimensions), storage_class, False, doc, "output")


class Connections:
    """Subclass and assign Input/PrerequisiteInput/Output attributes; the attribute name is the connection name."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        found: dict[str, Connection] = {}
        for base in reversed(cls.__mro__[1:]):
            found.update(getattr(base, "_connections", {}))
        for name, value in list(vars(cls).items()):
            if isinstance(value, Connection):
                found[name] = replace(value, name=name)
        cls._connections = found

    @classmethod
    def all(cls) -> dict[str, Connection]:
        return dict(getattr(cls, "_connections", {}))

    @classmethod
    def of_kind(cls, *kinds: str) -> Iterator[Connection]:
        return (c for c in cls.all().values() if c.kind in kinds)
