"""Plain value objects the registry hands out: dataset types, collections, dataset references."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping


class CollectionType(str, Enum):
    RUN = "RUN"
    CHAINED = "CHAINED"
    TAGGED = "TAGGED"


@dataclass(frozen=True)
class DatasetType:
    name: str
    dimensions: tuple[str, ...]
    storage_class: str

    def describe(self) -> str:
        return f"{self.name}({', '.join(self.dimensions)}) as {self.storage_class}"


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    type: CollectionType
    doc: str = ""
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetRef:
    """One stored dataset: what it is, where it is, and the run that wrote it."""

    id: str
    dataset_type: DatasetType
    data_id: Mapping[str, Any]
    run: str
    path: str | None = None
    checksum: str | None = None
    size: int | None = None
    formatter: str | None = None
    mtime_ns: int | None = None   # the file's mtime when its checksum was taken; None: unknown, hash to check
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return self.dataset_type.name

    def data_id_str(self) -> str:
        return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in self.data_id.items())

    def __str__(self) -> str:
        return f"{self.name}@{{{self.data_id_str()}}} [{self.run}]"
