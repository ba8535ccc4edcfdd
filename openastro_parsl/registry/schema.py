"""SQLAlchemy Core tables of the registry, generated from the dimension universe.

Core (not the ORM) because the planner reads tens of thousands of rows at a time and the ORM's per-object
cost would dominate. The dataset table carries one column per dimension, so a where-expression on a data ID
value needs no join; only dimension attributes (``exposure.day_obs``) join the dimension tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeEngine

from .universe import DimensionUniverse

SCHEMA_VERSION = 1
MAGIC = "openastro-parsl registry"
PATH_INDEX = "dataset_location_path"  # unique: two datasets never share a file (added on open to older repositories)
# Nullable, added on open to older repositories: NULL means "not recorded", so a worker hashes the file.
MTIME_COLUMN = "mtime_ns"
# The index of output links by dataset, and what older repositories had instead (replaced or dropped on open):
# every random-UUID index entry costs a page written per registered dataset (docs/scaling.md).
OUTPUT_ROLE = "role = 'output'"
OUTPUT_INDEX = "quantum_io_by_output"
OLD_INDEXES = ("quantum_io_by_dataset", "dataset_by_type_key")


def Str(length: int) -> TypeEngine[Any]:  # noqa: N802 - a column type, named like SQLAlchemy's
    """A string column: VARCHAR(length) on SQLite, which never enforces it, unbounded on PostgreSQL, which would.

    A value a backend accepts is then accepted by both (a long field or collection name).
    """
    return String(length).with_variant(String(), "postgresql")


_SQL_TYPES: dict[type, Callable[[], TypeEngine[Any]]] = {str: lambda: Str(128), int: BigInteger, float: Float}


def sql_type(py: type):
    """The SQL column type for values of Python type ``py`` (dimension keys and metadata)."""
    return _SQL_TYPES[py]()


@dataclass
class Schema:
    """The registry's tables, as built for one dimension universe."""

    metadata: MetaData
    meta: Table
    dimensions: dict[str, Table]
    dataset_type: Table
    collection: Table
    collection_chain: Table
    dataset: Table
    dataset_location: Table
    tagged: Table
    collection_meta: Table
    quantum: Table
    quantum_io: Table


def dimension_table_name(name: str) -> str:
    """The table holding the records of dimension ``name``."""
    return f"dim_{name}"


def build_schema(universe: DimensionUniverse) -> Schema:
    """The registry's tables for ``universe``: one per dimension, then datasets, collections, provenance."""
    md = MetaData()
    meta = Table("meta", md, Column("key", Str(64), primary_key=True), Column("value", Text, nullable=False))

    dims: dict[str, Table] = {}
    for dim in universe:
        cols = []
        # Only what identifies the record and what it directly implies: values implied further down
        # (an exposure's visit's band) come through joins, never stored twice.
        carried = [d for d in universe.sorted(set(universe.required([dim.name])) | set(dim.implies)) if d != dim.name]
        required = set(universe.required([dim.name]))
        for other in carried:
            cols.append(Column(other, sql_type(universe[other].key_type), primary_key=other in required,
                               nullable=other not in required))
        cols.append(Column(dim.key_name, sql_type(dim.key_type), primary_key=True))
        for attr, py in dim.metadata.items():
            cols.append(Column(attr, sql_type(py), nullable=True))
        fks = []
        for other in dim.related:
            other_dim = universe[other]
            local = list(universe.required([other]))
            remote_cols = [c if c != other else other_dim.key_name for c in local]
            fks.append(ForeignKeyConstraint(local, [f"{dimension_table_name(other)}.{c}" for c in remote_cols]))
        dims[dim.name] = Table(dimension_table_name(dim.name), md, *cols, *fks)

    dataset_type = Table(
        "dataset_type", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", Str(128), nullable=False, unique=True),
        Column("dimensions", Str(512), nullable=False),
        Column("storage_class", Str(64), nullable=False),
    )
    collection = Table(
        "collection", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", Str(256), nullable=False, unique=True),
        Column("type", Str(16), nullable=False),
        Column("doc", Text, nullable=False, default=""),
    )
    collection_chain = Table(
        "collection_chain", md,
        Column("parent_id", Integer, ForeignKey("collection.id", ondelete="CASCADE"), primary_key=True),
        Column("position", Integer, primary_key=True),
        Column("child_id", Integer, ForeignKey("collection.id"), nullable=False),
    )
    dim_cols = [Column(d.name, sql_type(d.key_type), nullable=True) for d in universe]
    dataset = Table(
        "dataset", md,
        Column("id", Str(36), primary_key=True),
        Column("dataset_type_id", Integer, ForeignKey("dataset_type.id"), nullable=False),
        Column("run_id", Integer, ForeignKey("collection.id"), nullable=False),
        Column("data_id_key", Str(512), nullable=False),
        Column("ingest_date", Float, nullable=False),
        *dim_cols,
        # Also the index of every dataset query (type, then runs): a second one on (type, key) was never chosen.
        UniqueConstraint("dataset_type_id", "run_id", "data_id_key", name="dataset_unique_in_run"),
    )
    dataset_location = Table(
        "dataset_location", md,
        Column("dataset_id", Str(36), ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True),
        # Byte order on PostgreSQL too, whatever the database's collation: a run folder's paths are one range.
        Column("path", Text().with_variant(Text(collation="C"), "postgresql"), nullable=False),
        Column("checksum", Str(64), nullable=False, index=True),
        Column("size", BigInteger, nullable=False),
        Column("formatter", Str(64), nullable=False),
        # The file's st_mtime_ns, taken when its checksum was computed: with the size it lets a worker trust
        # an unchanged file without hashing it (OPENASTRO_VERIFY_INPUTS=fast). Last, where ALTER TABLE puts it.
        Column(MTIME_COLUMN, BigInteger, nullable=True),
        Index(PATH_INDEX, "path", unique=True),
    )
    tagged = Table(
        "tagged", md,
        Column("collection_id", Integer, ForeignKey("collection.id", ondelete="CASCADE"), primary_key=True),
        Column("dataset_id", Str(36), ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True),
        Column("dataset_type_id", Integer, ForeignKey("dataset_type.id"), nullable=False),
        Column("data_id_key", Str(512), nullable=False),
        UniqueConstraint("collection_id", "dataset_type_id", "data_id_key", name="tagged_unique"),
    )
    collection_meta = Table(
        "collection_meta", md,
        Column("collection_id", Integer, ForeignKey("collection.id", ondelete="CASCADE"), primary_key=True),
        Column("key", Str(64), primary_key=True),
        Column("value", Text, nullable=False),
    )
    # Provenance: which quantum wrote a dataset, from which inputs, with which config, where.
    quantum = Table(
        "quantum", md,
        Column("id", Str(36), primary_key=True),
        Column("run_id", Integer, ForeignKey("collection.id", ondelete="CASCADE"), nullable=False),
        Column("task", Str(128), nullable=False),
        Column("task_class", Str(256), nullable=False),
        Column("data_id_key", Str(512), nullable=False),
        Column("config_hash", Str(32), nullable=False),
        Column("host", Str(256)),
        Column("slurm_job_id", Str(64)),
        Column("started", Float),
        Column("ended", Float),
        Column("packages", Text),
    )
    quantum_io = Table(
        "quantum_io", md,
        Column("quantum_id", Str(36), ForeignKey("quantum.id", ondelete="CASCADE"), primary_key=True),
        Column("dataset_id", Str(36), primary_key=True),
        Column("role", Str(8), primary_key=True),
        # "Which quantum wrote this dataset": outputs only, half the links (the other half, inputs, is never
        # looked up by dataset). Queries say role = 'output' as a literal, so that every plan can use it.
        Index(OUTPUT_INDEX, "dataset_id", sqlite_where=text(OUTPUT_ROLE), postgresql_where=text(OUTPUT_ROLE)),
    )
    return Schema(md, meta, dims, dataset_type, collection, collection_chain, dataset, dataset_location, tagged,
                  collection_meta, quantum, quantum_io)
