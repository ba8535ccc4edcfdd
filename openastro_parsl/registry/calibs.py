"""Certified calibrations: master datasets valid for a range of observing nights (a CALIBRATION collection).

A master bias made from one week's frames is right for that week, not for the frames of next year. As in the
Rubin butler, masters are written to an ordinary RUN by the calibration pipeline and then *certified* into a
CALIBRATION collection with a validity range; a calibration prerequisite (``PrerequisiteInput(...,
calibration=True)``) of a quantum is then the dataset whose range holds the night (``exposure.day_obs``) of
the quantum's exposure. Ranges are whole nights, YYYYMMDD, both ends included; within one CALIBRATION
collection the ranges of one dataset type and data ID never overlap, so a night picks at most one.

The table (``calib_validity``) is created on first use, so repositories made before it need no migration.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Generic, Sequence, TypeVar

from sqlalchemy import Column, ForeignKey, Index, Integer, Table, inspect, select

from ..errors import ConflictError, DataIdError, MissingDatasetError
from .names import validate_collection_name
from .refs import CollectionType, DatasetRef
from .schema import Str

__all__ = ["CALIBRATION_TYPES", "NIGHT_DIMENSION", "Certified", "ValidityIndex", "certify", "certified",
           "parse_night"]

TABLE = "calib_validity"
# The dimension attribute a quantum's night is read from.
NIGHT_DIMENSION = ("exposure", "day_obs")
# What `certify-calibrations` certifies when no dataset type is named: the calibration pipeline's masters.
CALIBRATION_TYPES = ("masterBias", "masterDark", "masterFlat")


def parse_night(value: Any, what: str) -> int:
    """A night as YYYYMMDD int, refused in one line unless it is a real calendar date."""
    text = str(value).strip()
    try:
        if not (len(text) == 8 and text.isdigit()):
            raise ValueError(text)
        dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise DataIdError(f"{what} {value!r} is not a night YYYYMMDD (e.g. 20260301)") from None
    return int(text)


def _table(registry) -> Table:
    md = registry.schema.metadata
    if TABLE in md.tables:
        return md.tables[TABLE]
    return Table(
        TABLE, md,
        Column("collection_id", Integer, ForeignKey("collection.id", ondelete="CASCADE"), primary_key=True),
        Column("dataset_id", Str(36), ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True),
        Column("begin_night", Integer, primary_key=True),
        Column("end_night", Integer, nullable=False),
        Column("dataset_type_id", Integer, ForeignKey("dataset_type.id"), nullable=False),
        Column("data_id_key", Str(512), nullable=False),
        Index("calib_validity_lookup", "collection_id", "dataset_type_id", "data_id_key"),
    )


def _exists(registry) -> bool:
    with registry.engine.connect() as c:
        return TABLE in inspect(c).get_table_names()


@dataclass(frozen=True)
class Certified:
    """One certification: a dataset, the CALIBRATION collection, the nights it is valid for (inclusive)."""

    ref: DatasetRef
    collection: str
    begin: int
    end: int

    def describe(self) -> str:
        return f"{self.ref.name} {{{self.ref.data_id_str()}}} {self.begin}-{self.end} in {self.collection!r}"


def _refuse_overlaps(c, t: Table, collection_id: int, collection: str, refs: Sequence[DatasetRef],
                     keys: Sequence[tuple], b: int, e: int) -> None:
    """One line for the first dataset whose new range meets a range it already has in the collection."""
    rows = c.execute(select(t.c.dataset_type_id, t.c.data_id_key, t.c.begin_night, t.c.end_night)
                     .where(t.c.collection_id == collection_id)).all()
    taken: dict[tuple, list[tuple[int, int]]] = {}
    for r in rows:
        taken.setdefault((r.dataset_type_id, r.data_id_key), []).append((r.begin_night, r.end_night))
    for ref, key in zip(refs, keys, strict=True):
        for ob, oe in taken.get(key, ()):
            if ob <= e and b <= oe:
                raise ConflictError(f"{ref.name} {{{ref.data_id_str()}}} is already certified in {collection!r} "
                                    f"for {ob}-{oe}, which overlaps {b}-{e}; certify into another CALIBRATION "
                                    "collection or choose a range that does not overlap")


def certify(registry, run: str, collection: str, *, begin: Any, end: Any,
            dataset_types: Sequence[str] | None = None) -> list[Certified]:
    """Certify the masters of RUN ``run`` into CALIBRATION ``collection`` for nights ``begin``..``end``.

    Everything is checked before anything is written (the range, the run, the collection's type), then, in one
    transaction, the overlaps with ranges already certified, the collection (made if new) and every row.
    """
    b, e = parse_night(begin, "--begin"), parse_night(end, "--end")
    if b > e:
        raise DataIdError(f"validity range {b}-{e} ends before it begins")
    info = registry._collection(run)
    if info is None:
        registry._require_collection(run)  # raises, naming the known collections
    if info[1] != CollectionType.RUN:
        raise ConflictError(f"{run!r} is a {info[1].value} collection; masters are certified from the RUN that "
                            "holds them")
    existing = registry._collection(collection)
    if existing is None:
        validate_collection_name(collection, "CALIBRATION collection")
    elif existing[1] != CollectionType.CALIBRATION:
        raise ConflictError(f"collection {collection!r} already exists as {existing[1].value}, not CALIBRATION")
    names = list(dataset_types) if dataset_types else [t for t in CALIBRATION_TYPES
                                                       if registry.get_dataset_type(t, missing_ok=True)]
    refs: list[DatasetRef] = []
    for name in names:
        registry.get_dataset_type(name)  # an unknown name is refused, naming the known ones
        refs.extend(registry.query_datasets(name, [run], find_first=False))
    if not refs:
        raise MissingDatasetError(f"run {run!r} holds no {', '.join(names) or 'master calibration'} datasets to "
                                  "certify (run pipelines/calib.yaml into it first)")
    t = _table(registry)
    keys = [(registry._dataset_type_id(r.name), registry.universe.data_id_key(r.dataset_type.dimensions, r.data_id))
            for r in refs]
    with registry.transaction() as c:  # every other check passed; an empty table holds no overlap
        t.create(c, checkfirst=True)
    with registry.transaction() as c:  # the overlap check and the rows in one transaction: no race between two
        if existing is None:
            registry.register_collection(collection, CollectionType.CALIBRATION,
                                         doc="master calibrations with validity ranges (nights)", conn=c)
        else:
            _refuse_overlaps(c, t, existing[0], collection, refs, keys, b, e)
        cid, _ = registry._require_collection(collection, c)
        c.execute(t.insert(), [{"collection_id": cid, "dataset_id": r.id, "begin_night": b, "end_night": e,
                                "dataset_type_id": k[0], "data_id_key": k[1]} for r, k in zip(refs, keys, strict=True)])
    return [Certified(r, collection, b, e) for r in refs]


def certified(registry, dataset_type: str, collections: Sequence[str]) -> list[tuple[int, Certified]]:
    """Every certification of ``dataset_type`` in the CALIBRATION collections of ``collections``.

    Chains are expanded; each comes with its collection's rank in the search order.
    """
    if registry.get_dataset_type(dataset_type, missing_ok=True) is None or not _exists(registry):
        return []
    search = registry.resolve_collections(list(collections))
    ranks = {}
    for i, name in enumerate(search):
        cid, ctype = registry._require_collection(name)
        if ctype == CollectionType.CALIBRATION:
            ranks[cid] = (i, name)
    if not ranks:
        return []
    t, d = _table(registry), registry.schema.dataset
    q = (select(*registry._ref_columns(), t.c.collection_id.label("_coll"), t.c.begin_night, t.c.end_night)
         .select_from(registry._base_select().join(t, t.c.dataset_id == d.c.id))
         .where(t.c.collection_id.in_(list(ranks)), d.c.dataset_type_id == registry._dataset_type_id(dataset_type)))
    with registry.engine.connect() as c:
        rows = c.execute(q).all()
    refs = registry._refs_from(rows)
    out = []
    for row, ref in zip(rows, refs, strict=True):
        rank, name = ranks[row._coll]
        out.append((rank, Certified(ref, name, int(row.begin_night), int(row.end_night))))
    out.sort(key=lambda x: (x[0], sorted(x[1].ref.data_id.items()), x[1].begin))
    return out


T = TypeVar("T")


@dataclass
class ValidityIndex(Generic[T]):
    """Items by (key, night): built once per plan, each lookup a dictionary hit and a bisection per collection.

    ``key`` is the tuple of the data ID values the calibration shares with the quantum (instrument, band...).
    """

    _by_key: dict[tuple, list[tuple[int, list[int], list[tuple[int, int, T]]]]] = field(default_factory=dict)

    def add(self, key: tuple, rank: int, begin: int, end: int, item: T) -> None:
        lanes = self._by_key.setdefault(key, [])
        lane = next((x for x in lanes if x[0] == rank), None)
        if lane is None:
            lane = (rank, [], [])
            lanes.append(lane)
            lanes.sort(key=lambda x: x[0])
        i = bisect.bisect_right(lane[1], begin)
        lane[1].insert(i, begin)
        lane[2].insert(i, (begin, end, item))

    def find(self, key: tuple, night: int) -> T | None:
        """The item of the first collection (search order) whose range holds ``night``."""
        for _, begins, entries in self._by_key.get(key, ()):
            i = bisect.bisect_right(begins, night) - 1
            if i >= 0 and entries[i][1] >= night:
                return entries[i][2]
        return None

    def ranges(self, key: tuple) -> list[tuple[int, int]]:
        """The certified ranges for ``key`` (for an error message)."""
        return sorted((b, e) for _, _, entries in self._by_key.get(key, ()) for b, e, _ in entries)
