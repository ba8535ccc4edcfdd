"""Plain value objects the registry hands out: dataset types, collections, dataset references."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping

from ..errors import MissingDatasetError


class CollectionType(str, Enum):
    """The kinds of collection.

    RUN (written by one run), CHAINED (an ordered search path), TAGGED (hand-picked datasets) or CALIBRATION
    (master calibrations, each certified for a range of nights: ``registry/calibs.py``).
    """

    RUN = "RUN"
    CHAINED = "CHAINED"
    TAGGED = "TAGGED"
    CALIBRATION = "CALIBRATION"


@dataclass(frozen=True)
class DatasetType:
    """A dataset type: a name, the dimensions of its data IDs, the storage class of its datasets."""

    name: str
    dimensions: tuple[str, ...]
    storage_class: str

    def describe(self) -> str:
        return f"{self.name}({', '.join(self.dimensions)}) as {self.storage_class}"


@dataclass(frozen=True)
class CollectionInfo:
    """A collection as the registry describes it; ``children`` is a CHAINED collection's search path."""

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

    def location(self) -> tuple[str, str]:
        """The dataset's file (relative to the datastore root, or absolute) and formatter.

        A ref the registry hands out always has both; one made by hand may not.
        """
        if self.path is None or self.formatter is None:
            raise MissingDatasetError(f"{self} has no file in the datastore")
        return self.path, self.formatter

    def data_id_str(self) -> str:
        return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in self.data_id.items())

    def __str__(self) -> str:
        return f"{self.name}@{{{self.data_id_str()}}} [{self.run}]"
