"""The registry: the single source of truth for what exists (dimensions, dataset types, collections, datasets).

One SQL database per repository, SQLite (a file in it) or PostgreSQL (by URL; docs/registry.md), the same code on
both. Several processes write it at once (submits into different runs, ingests, planners): every write is one short
transaction, so a killed writer never leaves half a change behind; SQLite writers queue for its write lock.
"""

from __future__ import annotations

import fnmatch
import json
import time
import uuid
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence, overload

from sqlalchemy import BigInteger, Table, and_, create_engine, event, func, inspect, literal, or_, select
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError
from sqlalchemy.sql.expression import FromClause

from ..errors import ConflictError, DataIdError, MissingDatasetError, RepositoryError, WhereError
from .names import validate_collection_name
from .refs import CollectionInfo, CollectionType, DatasetRef, DatasetType
from .schema import (
    MAGIC,
    MTIME_COLUMN,
    OLD_INDEXES,
    OUTPUT_INDEX,
    OUTPUT_ROLE,
    PATH_INDEX,
    SCHEMA_VERSION,
    build_schema,
    dimension_table_name,
    sql_type,
)
from .sqlite_tuning import SqliteTuning, busy_timeout_s, sqlite_tuning
from .universe import DimensionUniverse
from .where import compile_where, parse_where, referenced_identifiers


class RegistryBusyError(RepositoryError):
    """An SQLite registry whose write lock another process held for longer than ``busy_timeout_s()``."""


def _sqlite_connect(tuning: SqliteTuning):
    def connect(dbapi_conn, _record) -> None:
        # The driver's own transaction handling off: SQLAlchemy's "begin" event below says BEGIN itself.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        for pragma in tuning.pragmas():  # page cache, memory map, checkpoint interval (sqlite_tuning.py)
            cur.execute(pragma)
        cur.close()
    return connect


def _sqlite_begin(conn: Connection) -> None:
    """Writes take SQLite's write lock when they begin, waiting for it (the busy timeout) rather than failing.

    A deferred transaction that read first and then writes cannot wait: SQLite fails it at once with 'database is
    locked' when another writer committed in between. Reads stay deferred (and work on a read-only file).
    """
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


# SQLite's words for a file that is not (or no longer) a whole database.
_DAMAGED = ("file is not a database", "database disk image is malformed", "file is encrypted")


def normalize_url(url: str) -> str:
    """``postgresql://`` (and ``postgres://``) through psycopg 3, the driver the package depends on."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def is_postgres(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL database."""
    return normalize_url(url).startswith("postgresql")


def display_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True) if "://" in url else url


def make_engine(url: str) -> Engine:
    """An engine for ``url``, with one-line errors for what users meet.

    SQLite gets WAL, foreign keys, write transactions that wait for the lock, and one-line errors for a damaged or
    busy file; PostgreSQL one-line errors for a server that cannot be reached.
    """
    url = normalize_url(url)
    if url.startswith("sqlite"):
        timeout = busy_timeout_s()
        # LIFO: the connection used last is used next. SQLite empties a connection's page cache when another
        # connection wrote since its last transaction, so two pooled connections taken in turn (FIFO, the
        # default) would each begin every write with a cold cache.
        engine = create_engine(url, connect_args={"timeout": timeout}, pool_use_lifo=True)
        event.listen(engine, "connect", _sqlite_connect(sqlite_tuning()))
        event.listen(engine, "begin", _sqlite_begin)
        where = _sqlite_path(url) or url

        def sqlite_error(context) -> None:
            """Damage or a lock held too long, found in the middle of a query: one clear line, not a traceback."""
            msg = str(context.original_exception)
            if any(word in msg for word in _DAMAGED):
                raise RepositoryError(f"registry database {where} is damaged ({msg}); restore it from a backup")
            if "database is locked" in msg or "database table is locked" in msg:
                raise RegistryBusyError(
                    f"registry database {where} is busy: another process held its write lock for more than "
                    f"{timeout:g} s; try again when it is done, or serve the repository from PostgreSQL "
                    "(docs/registry.md) for many concurrent writers")

        event.listen(engine, "handle_error", sqlite_error)
        return engine
    engine = create_engine(url, pool_pre_ping=True)
    shown = display_url(url)

    def server_error(context) -> None:
        """A server that is down or a database that is gone: one line naming the URL, not a driver traceback."""
        msg = " ".join(str(context.original_exception).split())
        if isinstance(context.sqlalchemy_exception, OperationalError) and msg.startswith("connection"):
            if f'database "{engine.url.database}" does not exist' in msg:  # the server answered: no such database
                raise RepositoryError(f"no registry database {shown}: the server has no such database (dropped, or "
                                      "the URL in butler.yaml is wrong?)")
            raise RepositoryError(f"registry database {shown} cannot be reached ({msg}); is the server running? "
                                  "(a local one: bin/postgres-local start)")

    event.listen(engine, "handle_error", server_error)
    return engine


def create_database(url: str) -> None:
    """Create the PostgreSQL database ``url`` names unless it exists: one database per repository.

    Made with byte-order collation ('C'), so string ranges (a run folder's paths) and sort orders are SQLite's.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ProgrammingError

    u = make_url(url)
    shown = display_url(url)
    name = u.database
    if not name or '"' in name:
        raise RepositoryError(f"{shown} names no usable database: end the URL with one, e.g. .../openastro_myrepo")
    probe = create_engine(u)
    try:
        with probe.connect():
            return
    except OperationalError as exc:
        if "does not exist" not in str(exc.orig):
            raise RepositoryError(f"registry database {shown} cannot be reached ({' '.join(str(exc.orig).split())}); "
                                  "is the server running? (a local one: bin/postgres-local start)") from None
    finally:
        probe.dispose()
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(sql_text(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\' '
                               "LC_COLLATE 'C' LC_CTYPE 'C'"))
    except ProgrammingError as exc:
        if "already exists" not in str(exc.orig):  # another process made it meanwhile: fine
            raise RepositoryError(f"cannot create database {name!r} on {shown}: {' '.join(str(exc.orig).split())}; "
                                  "create it yourself (createdb) and run the command again") from None
    except OperationalError as exc:
        raise RepositoryError(f"cannot create database {name!r} on {shown}: {' '.join(str(exc.orig).split())}") from None
    finally:
        admin.dispose()


def _savepoint(c: Connection):
    """A savepoint where a refused statement must not end the transaction.

    PostgreSQL aborts the whole transaction on an error unless it was inside one; SQLite carries on without it.
    """
    return nullcontext() if c.dialect.name == "sqlite" else c.begin_nested()


def _insert_many(c: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows that all have the same keys, in one executemany.

    On SQLite as plain tuples: SQLAlchemy's per-row parameter processing cost as much CPU as SQLite's own inserts
    when registering a batch (its column types have nothing to convert there). Errors are wrapped as always.
    """
    if c.dialect.name != "sqlite":
        c.execute(table.insert(), rows)
        return
    cols = list(rows[0])
    names = ", ".join(f'"{k}"' for k in cols)
    sql = f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' * len(cols))})"
    c.exec_driver_sql(sql, [tuple(r[k] for k in cols) for r in rows])


def _unique_race(c: Connection, exc: IntegrityError) -> bool:
    """A unique key taken by another process between our check and our insert (PostgreSQL, READ COMMITTED).

    SQLite writers hold the write lock from their first statement, so there it is never a race.
    """
    return c.dialect.name != "sqlite" and getattr(exc.orig, "sqlstate", None) == "23505"


def _sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    return None


_SQLITE_HEADER = b"SQLite format 3\x00"


def check_sqlite_file(path: Path) -> None:
    """Name what is wrong with a registry file before SQLite sees it.

    SQLite would re-create a missing one, take an empty one for a new database, and call anything else just 'not a
    database'.
    """
    if not path.exists():
        raise RepositoryError(f"no registry database at {path}: the file is missing (deleted or moved?) and a "
                              "repository cannot be opened without it; restore it from a backup")
    if not path.is_file():
        raise RepositoryError(f"registry database {path} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise RepositoryError(f"registry database {path} is empty (0 bytes): it was truncated or replaced; "
                              "restore it from a backup")
    with open(path, "rb") as f:
        head = f.read(100)
    if not head.startswith(_SQLITE_HEADER):
        raise RepositoryError(f"registry database {path} is not an SQLite database (it does not start with the "
                              "SQLite header): it was damaged or replaced by another file; restore it from a backup")
    # Pages still in a WAL or hot journal are not in the file yet: only without one must the file be whole.
    pending = [path.with_name(path.name + s) for s in ("-wal", "-journal")]
    if len(head) == 100 and head[24:28] == head[92:96] and not any(p.exists() and p.stat().st_size for p in pending):
        page = int.from_bytes(head[16:18], "big")
        expected = (65536 if page == 1 else page) * int.from_bytes(head[28:32], "big")
        if size < expected:
            raise RepositoryError(f"registry database {path} is truncated ({size} bytes; its header says "
                                  f"{expected}); restore it from a backup")
    elif len(head) < 100:
        raise RepositoryError(f"registry database {path} is truncated ({size} bytes)")


def _record_diff(old: Mapping[str, Any], new: Mapping[str, Any], fill: bool = False) -> dict[str, tuple[Any, Any]]:
    """Values of ``new`` that differ from ``old``: {column: (stored, new)}; None in ``new`` means "not given".

    A stored NULL counts as a difference only with ``fill`` (updates fill it in; a sync fills it silently).
    Floats equal to 1e-9 (relative) are the same value: they went through SQLite and back.
    """
    out = {}
    for k, v in new.items():
        a = old.get(k)
        if v is None or (a is None and not fill) or a == v:
            continue
        if isinstance(v, float) and isinstance(a, (int, float)) and abs(a - v) < 1e-9 * max(1, abs(v)):
            continue
        out[k] = (a, v)
    return out


class Registry:
    """Dimensions, dataset types, collections and datasets in one SQL database (SQLite by default, or PostgreSQL)."""

    def __init__(self, url: str, *, _create_with: DimensionUniverse | None = None):
        self.url = url = normalize_url(url)
        self._dataset_types: dict[str, tuple[int, DatasetType]] = {}
        self._collections: dict[str, tuple[int, CollectionType]] = {}
        self._meta: dict[str, str] = {}  # the meta table as read at open (and as written since)
        path = _sqlite_path(url)
        if _create_with is None and path is not None:
            check_sqlite_file(path)
        if _create_with is not None and is_postgres(url):
            create_database(url)
        self.engine = make_engine(url)
        if _create_with is not None:
            self.universe = _create_with
            self.schema = build_schema(self.universe)
            self._create()
        else:
            self.universe = self._check_and_load_universe(path or display_url(url))
            self.schema = build_schema(self.universe)
            self._ensure_path_index()
            self._ensure_lean_indexes()
        self._has_mtime = _create_with is not None or self._ensure_mtime_column()

    # -- creation and opening -----------------------------------------------------------------
    @classmethod
    def create(cls, url: str, universe: DimensionUniverse | None = None) -> "Registry":
        return cls(url, _create_with=universe or DimensionUniverse.default())

    def _create(self) -> None:
        insp = inspect(self.engine)
        if insp.get_table_names():
            raise RepositoryError(f"{display_url(self.url)}: database is not empty; refusing to create a registry in it")
        rows = [{"key": "magic", "value": MAGIC}, {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                {"key": "universe", "value": self.universe.text},
                {"key": "created", "value": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]
        with self.transaction() as conn:
            self.schema.metadata.create_all(conn)
            conn.execute(self.schema.meta.insert(), rows)
        self._meta = {r["key"]: r["value"] for r in rows}

    def _check_and_load_universe(self, where: Any) -> DimensionUniverse:
        try:
            with self.engine.connect() as conn:
                names = inspect(conn).get_table_names()
                if "meta" not in names:
                    raise RepositoryError(f"{where} is not an openastro-parsl registry (no 'meta' table: a foreign database?)")
                rows: dict[str, str] = {k: v for k, v in conn.execute(sql_text("SELECT key, value FROM meta"))}
        except DatabaseError as exc:
            raise RepositoryError(f"registry database {where} cannot be read: {exc.orig}") from None
        if rows.get("magic") != MAGIC:
            raise RepositoryError(f"{where} is not an openastro-parsl registry (its meta table belongs to something else)")
        self._meta = rows
        version = int(rows.get("schema_version", "0"))
        if version != SCHEMA_VERSION:
            age = "an older" if version < SCHEMA_VERSION else "a newer"
            raise RepositoryError(
                f"{where} has registry schema version {version}, made by {age} openastro-parsl; "
                f"this version reads schema {SCHEMA_VERSION} only (create a new repository or use a matching version)")
        return self._upgraded(DimensionUniverse(rows["universe"], f"{where} (stored universe)"))

    def meta_value(self, key: str) -> str | None:
        """A value of the registry's own key-value table, as read when it was opened."""
        return self._meta.get(key)

    def set_meta_value(self, key: str, value: str) -> bool:
        """Write one key of the meta table; False (and nothing written) where the database cannot be written."""
        try:
            with self.transaction() as c:
                if c.execute(sql_text("UPDATE meta SET value = :v WHERE key = :k"), {"k": key, "v": value}).rowcount == 0:
                    c.execute(self.schema.meta.insert(), [{"key": key, "value": value}])
        except DatabaseError:
            return False
        self._meta[key] = value
        return True

    def _upgraded(self, stored: DimensionUniverse) -> DimensionUniverse:
        """The packaged universe, when it only adds metadata to ``stored``: its columns are added on open.

        One transaction: ALTER TABLE ADD COLUMN (nullable: old records read "unknown") and the new universe text.
        A custom universe, or a repository that cannot be written, keeps its own (new metadata is then refused by
        name when written).
        """
        packaged = DimensionUniverse.default()
        added = packaged.metadata_added_since(stored)
        if not added:
            return stored
        try:
            with self.transaction() as c:
                for dim, attr, py in added:
                    table = dimension_table_name(dim)
                    have = {col["name"] for col in inspect(c).get_columns(table)}
                    if attr not in have:
                        kind = sql_type(py).compile(dialect=self.engine.dialect)
                        c.execute(sql_text(f'ALTER TABLE {table} ADD COLUMN "{attr}" {kind}'))
                c.execute(sql_text("UPDATE meta SET value = :v WHERE key = 'universe'"), {"v": packaged.text})
        except DatabaseError:  # read-only (or being upgraded by another process, which then wins)
            return stored
        return packaged

    def _ensure_path_index(self) -> None:
        """Add the index that makes the datastore path check fast, once, to repositories made before it.

        Where their paths are still distinct it is also unique. A read-only repository just goes slower.
        """
        t = self.schema.dataset_location
        with self.engine.connect() as c:
            have = {ix["name"] for ix in inspect(c).get_indexes(t.name)}
        if have & {PATH_INDEX, PATH_INDEX + "_dup"}:
            return
        try:
            try:
                with self.transaction() as c:
                    c.execute(sql_text(f"CREATE UNIQUE INDEX IF NOT EXISTS {PATH_INDEX} ON {t.name} (path)"))
            except IntegrityError:  # shared paths made before the check: `insert_datasets` still refuses more
                with self.transaction() as c:
                    c.execute(sql_text(f"CREATE INDEX IF NOT EXISTS {PATH_INDEX}_dup ON {t.name} (path)"))
        except OperationalError:
            pass

    def _ensure_lean_indexes(self) -> None:
        """Give repositories made before it the output-only link index, and drop the two indexes it supersedes.

        ``quantum_io_by_dataset`` held every link (inputs too, never looked up by dataset) and ``dataset_by_type_key``
        what the unique (type, run, key) index already serves: each cost a page written per registered dataset.
        One transaction; a read-only repository (or one another process is migrating) keeps them and works as before.
        """
        with self.engine.connect() as c:
            found = inspect(c)
            names = {ix["name"] for t in (self.schema.quantum_io, self.schema.dataset) for ix in found.get_indexes(t.name)}
        if OUTPUT_INDEX in names and not names & set(OLD_INDEXES):
            return
        try:
            with self.transaction() as c:
                io = self.schema.quantum_io.name
                c.execute(sql_text(f"CREATE INDEX IF NOT EXISTS {OUTPUT_INDEX} ON {io} (dataset_id) WHERE {OUTPUT_ROLE}"))
                for name in OLD_INDEXES:
                    c.execute(sql_text(f"DROP INDEX IF EXISTS {name}"))
        except DatabaseError:
            pass

    def _ensure_mtime_column(self) -> bool:
        """Add ``dataset_location.mtime_ns`` to repositories made before input stats were recorded.

        Nullable: their rows stay NULL, "hash it". Old code ignores the extra column, so the schema version stays. False
        when it cannot be added (a read-only file): refs then carry no mtime.
        """
        t = self.schema.dataset_location

        def present() -> bool:
            with self.engine.connect() as c:
                return MTIME_COLUMN in {col["name"] for col in inspect(c).get_columns(t.name)}

        if present():
            return True
        try:
            with self.transaction() as c:
                c.execute(sql_text(f"ALTER TABLE {t.name} ADD COLUMN {MTIME_COLUMN} BIGINT"))
        except DatabaseError:  # read-only, or another process added it first
            return present()
        return True

    @property
    def display_url(self) -> str:
        """The database's URL without a password (for messages)."""
        return display_url(self.url)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    @contextmanager
    def _within(self, conn: Connection | None) -> Iterator[Connection]:
        """The caller's transaction behind a savepoint (a refused insert leaves it usable), else a new one."""
        if conn is not None:
            with _savepoint(conn):
                yield conn
        else:
            with self.transaction() as c:
                yield c

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction, rolled back on any exception.

        A rollback also forgets the collections and dataset types cached meanwhile: a retry in the same process
        must not find a run whose creation was undone.
        """
        try:
            with self.engine.connect() as conn:
                conn.execution_options(write=True)  # SQLite: BEGIN IMMEDIATE (see _sqlite_begin)
                with conn.begin():
                    yield conn
        except BaseException:
            self._collections.clear()
            self._dataset_types.clear()
            raise

    def close(self) -> None:
        self.engine.dispose()

    # -- dimension records --------------------------------------------------------------------
    def _record_columns(self, dimension: str) -> list[str]:
        return [c.name for c in self.schema.dimensions[dimension].columns]

    def sync_dimension_records(self, dimension: str, records: Iterable[Mapping[str, Any]],
                               conn: Connection | None = None) -> int:
        """Insert records that are new; identical ones are skipped; a differing one is a ConflictError.

        Returns the number inserted.
        """
        table = self.schema.dimensions[dimension]
        pk = [c.name for c in table.primary_key.columns]
        rows = self._record_rows(dimension, records)
        if not rows:
            return 0

        def _do(c: Connection, retry: bool = True) -> int:
            inserted = 0
            keyset = [tuple(r.get(k) for k in pk) for r in rows]
            existing = self._existing_records(c, dimension, keyset)
            new_rows = []
            seen: dict[tuple[Any, ...], dict[str, Any]] = {}
            for key, row in zip(keyset, rows, strict=True):
                old = existing.get(key) or seen.get(key)
                if old is not None:
                    diff = _record_diff(old, row)
                    if diff:
                        what = ", ".join(f"{k}: stored {a!r} vs new {b!r}" for k, (a, b) in diff.items())
                        raise ConflictError(f"{dimension} {dict(zip(pk, key, strict=True))} already exists with "
                                            f"different values ({what})")
                    # Values unknown so far (NULL) may be filled in later: a field first seen in a header
                    # gets its centre when the survey defines it.
                    fill = {k: v for k, v in row.items() if v is not None and old.get(k) is None}
                    if fill and key in existing:
                        match = [table.c[k] == v for k, v in zip(pk, key, strict=True)]
                        c.execute(table.update().where(*match).values(**fill))
                        old.update(fill)
                    continue
                seen[key] = row
                new_rows.append(row)
            if new_rows:
                try:
                    with _savepoint(c):
                        c.execute(table.insert(), new_rows)
                except IntegrityError as exc:
                    if retry and _unique_race(c, exc):  # compare with the records another process just made
                        return _do(c, retry=False)
                    raise
                inserted = len(new_rows)
            return inserted

        if conn is not None:
            return _do(conn)
        with self.transaction() as c:
            return _do(c)

    def update_dimension_records(self, dimension: str, records: Iterable[Mapping[str, Any]],
                                 conn: Connection | None = None) -> dict[str, int]:
        """Insert new records and update changed ones (same key): the path for re-running a campaign set-up.

        A value given as None leaves the stored one as it is. Changing what a record implies (a target's field)
        is refused while datasets were registered with the old value: they would contradict the record. Returns
        the counts ``inserted``, ``updated``, ``unchanged``.
        """
        dim = self.universe[dimension]
        table = self.schema.dimensions[dimension]
        pk = [c.name for c in table.primary_key.columns]
        rows = self._record_rows(dimension, records)
        counts = {"inserted": 0, "updated": 0, "unchanged": 0}

        def _do(c: Connection, retry: bool = True) -> dict[str, int]:
            keyset = [tuple(r.get(k) for k in pk) for r in rows]
            existing = self._existing_records(c, dimension, keyset)
            new_rows: dict[tuple[Any, ...], dict[str, Any]] = {}
            for key, row in zip(keyset, rows, strict=True):
                if key in new_rows:  # given twice: the last one wins
                    new_rows[key].update({k: v for k, v in row.items() if v is not None})
                    continue
                old = existing.get(key)
                if old is None:
                    new_rows[key] = row
                    continue
                diff = _record_diff(old, row, fill=True)
                if not diff:
                    counts["unchanged"] += 1
                    continue
                for other in dim.implies:
                    if other in diff:
                        self._refuse_implied_change(c, dimension, dict(zip(pk, key, strict=True)), other, diff[other])
                match = [table.c[k] == v for k, v in zip(pk, key, strict=True)]
                c.execute(table.update().where(*match).values(**{k: b for k, (_, b) in diff.items()}))
                existing[key] = {**old, **{k: b for k, (_, b) in diff.items()}}
                counts["updated"] += 1
            if new_rows:
                try:
                    with _savepoint(c):
                        c.execute(table.insert(), list(new_rows.values()))
                except IntegrityError as exc:
                    if retry and _unique_race(c, exc):
                        counts.update(inserted=0, updated=0, unchanged=0)
                        return _do(c, retry=False)
                    raise
                counts["inserted"] = len(new_rows)
            return counts

        if conn is not None:
            return _do(conn)
        with self.transaction() as c:
            return _do(c)

    def _refuse_implied_change(self, c: Connection, dimension: str, key: dict[str, Any], other: str,
                               change: tuple[Any, Any]) -> None:
        d = self.schema.dataset
        conds = [d.c[k if k != self.universe[dimension].key_name else dimension] == v for k, v in key.items()]
        n = c.execute(select(func.count()).select_from(d).where(*conds, d.c[other] == change[0])).scalar_one()
        if n:
            ident = ", ".join(f"{k}={v!r}" for k, v in key.items())
            raise ConflictError(f"{dimension} {{{ident}}}: cannot change its {other} from {change[0]!r} to "
                                f"{change[1]!r}: {n} registered dataset(s) carry {other}={change[0]!r}")

    def _existing_records(self, c: Connection, dimension: str, keyset: list[tuple]) -> dict[tuple, dict[str, Any]]:
        """Stored records of ``dimension`` by primary key, looked up in chunks (SQLite caps bound parameters)."""
        table = self.schema.dimensions[dimension]
        pk = [col.name for col in table.primary_key.columns]
        existing: dict[tuple, dict[str, Any]] = {}
        for i in range(0, len(keyset), 300):
            chunk = keyset[i:i + 300]
            cond = or_(*[and_(*[table.c[k] == v for k, v in zip(pk, key, strict=True)]) for key in chunk])
            for r in c.execute(select(table).where(cond)).mappings():
                existing[tuple(r[k] for k in pk)] = dict(r)
        return existing

    def _record_rows(self, dimension: str, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Records as table rows: the key under its column name, related values coerced; unknown fields refused."""
        dim = self.universe[dimension]
        cols = set(self._record_columns(dimension))
        rows = []
        for rec in records:
            unknown = set(rec) - cols - {dimension}
            if unknown:
                raise DataIdError(f"{dimension} record {dict(rec)} has unknown field(s) {sorted(unknown)}; "
                                  f"known: {sorted(cols)}")
            row = {k: v for k, v in rec.items() if k != dimension}
            if dimension in rec:
                row[dim.key_name] = rec[dimension]
            for other in dim.related:
                if other in row and row[other] is not None:
                    row[other] = self.universe.coerce(other, row[other])
            if row.get(dim.key_name) is None:
                raise DataIdError(f"{dimension} record {dict(rec)} lacks its key {dim.key_name!r}")
            row[dim.key_name] = self.universe.coerce(dimension, row[dim.key_name])
            rows.append(row)
        # One INSERT of many rows binds the first row's keys to all: give every row every key (None: not given).
        keys = list(dict.fromkeys(k for r in rows for k in r))
        return [{k: r.get(k) for k in keys} for r in rows]

    def dimension_records(self, dimension: str, where: str = "", binds: Mapping[str, Any] | None = None) -> list[dict]:
        table = self.schema.dimensions[dimension]
        query = select(table)
        clause = self._where(where, binds, lambda d, a: self._dimension_column_for(dimension, table, d, a))
        if clause is not None:
            query = query.where(clause)
        with self.engine.connect() as conn:
            result = conn.execute(query)
            keys = [str(k) for k in result.keys()]  # zip with plain keys: 3-5x faster than .mappings() rows
            return [dict(zip(keys, r, strict=True)) for r in result]

    def _dimension_column_for(self, base_dim: str, table, dim: str, attr: str | None):
        d = self.universe[dim]
        if dim == base_dim:
            return table.c[d.key_name if attr is None else attr]
        if attr is None and dim in table.c:
            return table.c[dim]
        raise WhereError(f"where: {dim}{'.' + attr if attr else ''} cannot be used when listing {base_dim} records")

    def expand_data_id(self, dimensions: Sequence[str], data_id: Mapping[str, Any],
                       conn: Connection | None = None) -> dict[str, Any]:
        """Normalise a data ID and fill in the values its records imply (an exposure's band and field)."""
        did = self.universe.normalize(dimensions, data_id)
        wanted = self.universe.data_id_order(dimensions)
        missing = [d for d in wanted if d not in did]
        if not missing:
            return {d: did[d] for d in wanted}

        def _fill(c: Connection) -> None:
            for dim in self.universe.required(dimensions):
                d = self.universe[dim]
                needs = [x for x in d.implies if x not in did]
                if not needs:
                    continue
                table = self.schema.dimensions[dim]
                keys = self.universe.required([dim])
                cond = and_(*[(table.c[d.key_name] if k == dim else table.c[k]) == did[k] for k in keys])
                row = c.execute(select(*[table.c[x] for x in needs]).where(cond)).first()
                if row is None:
                    raise DataIdError(f"no {dim} record for {{{', '.join(f'{k}={did[k]!r}' for k in keys)}}}; "
                                      f"ingest or define it first")
                for x, v in zip(needs, row, strict=True):
                    did[x] = v

        if conn is not None:
            _fill(conn)
        else:
            with self.engine.connect() as c:
                _fill(c)
        return {d: did.get(d) for d in wanted}

    # -- dataset types ------------------------------------------------------------------------
    def register_dataset_type(self, dataset_type: DatasetType, conn: Connection | None = None) -> DatasetType:
        """Register a dataset type, or check it matches the one already registered under that name."""
        dims = self.universe.sorted(dataset_type.dimensions)
        dataset_type = DatasetType(dataset_type.name, dims, dataset_type.storage_class)
        if not dataset_type.name.replace("_", "").replace("-", "").isalnum():
            raise ConflictError(f"dataset type name {dataset_type.name!r} may use only letters, digits, '_' and '-'")
        existing = self.get_dataset_type(dataset_type.name, missing_ok=True)
        if existing is not None:
            if existing != dataset_type:
                raise ConflictError(f"dataset type {dataset_type.name!r} is already registered as "
                                    f"{existing.describe()}; cannot redefine it as {dataset_type.describe()}")
            return existing

        def _do(c: Connection) -> None:
            c.execute(self.schema.dataset_type.insert().values(
                name=dataset_type.name, dimensions=",".join(dims), storage_class=dataset_type.storage_class))

        try:
            with self._within(conn) as c:
                _do(c)
        except IntegrityError:  # another process registered it meanwhile: compare with theirs
            self._dataset_types.pop(dataset_type.name, None)
            return self.register_dataset_type(dataset_type, conn)
        self._dataset_types.pop(dataset_type.name, None)
        return dataset_type

    def _load_dataset_types(self) -> None:
        t = self.schema.dataset_type
        with self.engine.connect() as conn:
            for row in conn.execute(select(t)):
                dims = tuple(d for d in row.dimensions.split(",") if d)
                self._dataset_types[row.name] = (row.id, DatasetType(row.name, dims, row.storage_class))

    @overload
    def get_dataset_type(self, name: str, missing_ok: Literal[False] = False) -> DatasetType: ...

    @overload
    def get_dataset_type(self, name: str, missing_ok: bool) -> DatasetType | None: ...

    def get_dataset_type(self, name: str, missing_ok: bool = False) -> DatasetType | None:
        if name not in self._dataset_types:
            self._load_dataset_types()
        if name not in self._dataset_types:
            if missing_ok:
                return None
            known = ", ".join(sorted(self._dataset_types)) or "none"
            raise MissingDatasetError(f"unknown dataset type {name!r}; registered: {known}")
        return self._dataset_types[name][1]

    def _dataset_type_id(self, name: str) -> int:
        self.get_dataset_type(name)
        return self._dataset_types[name][0]

    def query_dataset_types(self, pattern: str = "*") -> list[DatasetType]:
        self._load_dataset_types()
        pats = [p.strip() for p in pattern.split(",") if p.strip()] or ["*"]
        return [dt for name, (_, dt) in sorted(self._dataset_types.items())
                if any(fnmatch.fnmatchcase(name, p) for p in pats)]

    # -- collections --------------------------------------------------------------------------
    def _collection(self, name: str, conn: Connection | None = None) -> tuple[int, CollectionType] | None:
        if name in self._collections:
            return self._collections[name]
        t = self.schema.collection

        def _q(c: Connection):
            return c.execute(select(t.c.id, t.c.type).where(t.c.name == name)).first()

        row = _q(conn) if conn is not None else self._read(_q)
        if row is None:
            return None
        self._collections[name] = (row.id, CollectionType(row.type))
        return self._collections[name]

    def _read(self, fn):
        with self.engine.connect() as c:
            return fn(c)

    def _require_collection(self, name: str, conn: Connection | None = None) -> tuple[int, CollectionType]:
        info = self._collection(name, conn)
        if info is None:
            known = [c.name for c in self.query_collections()]
            hint = f"; known: {', '.join(known)}" if known else "; the repository has no collections yet"
            raise MissingDatasetError(f"collection {name!r} does not exist{hint}")
        return info

    def register_collection(self, name: str, type: CollectionType = CollectionType.RUN, doc: str = "",
                            conn: Connection | None = None) -> bool:
        """Create a collection; True if created, False if it already existed with the same type.

        Only a new name is checked against the grammar (``names.py``): collections made before it stay usable.
        """
        existing = self._collection(name, conn) if isinstance(name, str) and name else None
        if existing is not None:
            if existing[1] != type:
                raise ConflictError(f"collection {name!r} already exists as {existing[1].value}, not {type.value}")
            return False
        validate_collection_name(name, f"{type.value} collection")

        def _do(c: Connection) -> None:
            res = c.execute(self.schema.collection.insert().values(name=name, type=type.value, doc=doc))
            key = res.inserted_primary_key
            assert key is not None  # an INSERT of one row always has its primary key
            self._collections[name] = (key[0], type)

        try:
            with self._within(conn) as c:
                _do(c)
        except IntegrityError:  # another process made it meanwhile: same type is fine, as above
            self._collections.pop(name, None)
            return self.register_collection(name, type, doc, conn)
        return True

    def register_run(self, name: str, doc: str = "", conn: Connection | None = None) -> bool:
        return self.register_collection(name, CollectionType.RUN, doc, conn)

    def set_chain(self, name: str, children: Sequence[str], *, create: bool = True,
                  conn: Connection | None = None) -> None:
        """Make ``name`` a CHAINED collection searching ``children`` in order (replacing its old chain)."""
        with (nullcontext(conn) if conn is not None else self.transaction()) as c:
            if self._collection(name, c) is None and create:
                self.register_collection(name, CollectionType.CHAINED, conn=c)
            pid, ptype = self._require_collection(name, c)
            if ptype != CollectionType.CHAINED:
                raise ConflictError(f"collection {name!r} is a {ptype.value} collection, not CHAINED")
            ids = []
            for child in children:
                cid, _ = self._require_collection(child, c)
                ids.append(cid)
            c.execute(self.schema.collection_chain.delete().where(self.schema.collection_chain.c.parent_id == pid))
            if ids:
                c.execute(self.schema.collection_chain.insert(),
                          [{"parent_id": pid, "position": i, "child_id": cid} for i, cid in enumerate(ids)])
            # Refuse cycles: resolving must terminate.
            self._flatten([name], c)

    def _children(self, c: Connection, parent_id: int) -> list[str]:
        cc, col = self.schema.collection_chain, self.schema.collection
        q = (select(col.c.name).select_from(cc.join(col, cc.c.child_id == col.c.id))
             .where(cc.c.parent_id == parent_id).order_by(cc.c.position))
        return list(c.execute(q).scalars())

    def _flatten(self, names: Sequence[str], c: Connection, stack: tuple[str, ...] = ()) -> list[str]:
        out: list[str] = []
        for name in names:
            if name in stack:
                raise ConflictError(f"collection chain cycle: {' -> '.join(stack + (name,))}")
            cid, ctype = self._require_collection(name, c)
            if ctype == CollectionType.CHAINED:
                sub = self._flatten(self._children(c, cid), c, stack + (name,))
            else:
                sub = [name]
            out.extend(s for s in sub if s not in out)
        return out

    def resolve_collections(self, names: str | Sequence[str]) -> list[str]:
        """Expand CHAINED collections into the ordered list of RUN/TAGGED collections to search."""
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        with self.engine.connect() as c:
            return self._flatten(list(names), c)

    def query_collections(self, pattern: str = "*") -> list[CollectionInfo]:
        t = self.schema.collection
        with self.engine.connect() as c:
            rows = c.execute(select(t).order_by(t.c.name)).all()
            out = []
            for r in rows:
                if not fnmatch.fnmatchcase(r.name, pattern):
                    continue
                ctype = CollectionType(r.type)
                children = tuple(self._children(c, r.id)) if ctype == CollectionType.CHAINED else ()
                out.append(CollectionInfo(r.name, ctype, r.doc or "", children))
        return out

    def has_collection(self, name: str) -> bool:
        return self._collection(name) is not None

    def collection_type(self, name: str) -> CollectionType:
        return self._require_collection(name)[1]

    def collection_doc(self, name: str) -> str:
        t = self.schema.collection
        with self.engine.connect() as c:
            return c.execute(select(t.c.doc).where(t.c.name == name)).scalar_one_or_none() or ""

    def set_collection_doc(self, name: str, doc: str) -> None:
        self._require_collection(name)
        with self.transaction() as c:
            c.execute(self.schema.collection.update().where(self.schema.collection.c.name == name).values(doc=doc))

    def set_collection_meta(self, name: str, key: str, value: Any, conn: Connection | None = None) -> None:
        """Record a JSON value about a collection (a run's input collections, its pipeline...)."""
        t = self.schema.collection_meta

        def _do(c: Connection) -> None:
            cid, _ = self._require_collection(name, c)
            c.execute(t.delete().where(t.c.collection_id == cid, t.c.key == key))
            c.execute(t.insert().values(collection_id=cid, key=key, value=json.dumps(value)))

        if conn is not None:
            _do(conn)
        else:
            with self.transaction() as c:
                _do(c)

    def collection_meta(self, name: str, key: str) -> Any:
        info = self._collection(name)
        if info is None:
            return None
        t = self.schema.collection_meta
        with self.engine.connect() as c:
            value = c.execute(select(t.c.value).where(t.c.collection_id == info[0], t.c.key == key)).scalar_one_or_none()
        return None if value is None else json.loads(value)

    def run_inputs(self, run: str) -> list[str] | None:
        """The input collections a pipeline run was made from (None for runs not made by a pipeline)."""
        return self.collection_meta(run, "inputs")

    # -- datasets -----------------------------------------------------------------------------
    def insert_datasets(self, dataset_type: str | DatasetType, run: str,
                        items: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
                        conn: Connection | None = None, ids: Sequence[str] | None = None,
                        expanded: bool = False) -> list[DatasetRef]:
        """Register datasets of one type in one RUN collection.

        ``items`` are ``(data_id, location)`` pairs, where location holds ``path``, ``checksum``, ``size``,
        ``formatter`` and optionally ``mtime_ns`` (the file's when its checksum was taken; missing or None: not
        known, workers hash it). A dataset with the same type and data ID already in the run is a
        ConflictError and nothing of the batch is written.
        """
        dt = self.get_dataset_type(dataset_type if isinstance(dataset_type, str) else dataset_type.name)

        def _do(c: Connection) -> list[DatasetRef]:
            run_id, rtype = self._require_collection(run, c)
            if rtype != CollectionType.RUN:
                raise ConflictError(f"datasets can be written only to RUN collections; {run!r} is {rtype.value}")
            now = time.time()
            dt_id = self._dataset_type_id(dt.name)
            rows, locs, refs = [], [], []
            order = self.universe.data_id_order(dt.dimensions)
            for i, (data_id, loc) in enumerate(items):
                # ``expanded``: the caller (the submit loop) already holds complete, checked data IDs.
                full = {d: data_id.get(d) for d in order} if expanded else self.expand_data_id(dt.dimensions, data_id, c)
                key = self.universe.data_id_key(dt.dimensions, full)
                ds_id = ids[i] if ids is not None else str(uuid.uuid4())
                rows.append({"id": ds_id, "dataset_type_id": dt_id, "run_id": run_id, "data_id_key": key,
                             "ingest_date": now, **full})
                mtime = loc.get("mtime_ns") if self._has_mtime else None
                mtime = None if mtime is None else int(mtime)
                locs.append({"dataset_id": ds_id, "path": str(loc["path"]), "checksum": loc["checksum"],
                             "size": int(loc["size"]), "formatter": loc["formatter"]})
                if self._has_mtime:
                    locs[-1][MTIME_COLUMN] = mtime
                refs.append(DatasetRef(ds_id, dt, full, run, str(loc["path"]), loc["checksum"], int(loc["size"]),
                                       loc["formatter"], mtime))
            if not rows:
                return []
            self._check_paths_free(c, locs, dt.name, run)
            try:
                with _savepoint(c):
                    _insert_many(c, self.schema.dataset, rows)
            except IntegrityError:
                t = self.schema.dataset
                keys = [r["data_id_key"] for r in rows]
                dup = c.execute(select(t.c.data_id_key).where(
                    t.c.dataset_type_id == dt_id, t.c.run_id == run_id, t.c.data_id_key.in_(keys[:900]))).scalars().first()
                if dup is None:  # duplicated inside the batch itself
                    dup = next(k for k, n in Counter(keys).items() if n > 1)
                raise ConflictError(f"{dt.name} {{{dup}}} already exists in run {run!r}") from None
            _insert_many(c, self.schema.dataset_location, locs)
            return refs

        if conn is not None:
            return _do(conn)
        with self.transaction() as c:
            return _do(c)

    def _check_paths_free(self, c: Connection, locs: list[dict], type_name: str, run: str) -> None:
        """Two datasets never share a file: the second would overwrite the first, whose checksum then lies."""
        l = self.schema.dataset_location
        paths: dict[str, str] = {}
        for loc in locs:
            if loc["path"] in paths:
                raise ConflictError(f"two {type_name} datasets of one batch in run {run!r} have the same datastore "
                                    f"path {loc['path']!r}")
            paths[loc["path"]] = loc["dataset_id"]
        keys = list(paths)
        for i in range(0, len(keys), 500):
            for path, owner in c.execute(select(l.c.path, l.c.dataset_id).where(l.c.path.in_(keys[i:i + 500]))):
                if owner != paths[path]:
                    raise ConflictError(f"cannot register {type_name} in run {run!r} at {path!r}: that datastore path "
                                        f"already belongs to dataset {self._describe(c, owner)}")

    def _describe(self, c: Connection, dataset_id: str) -> str:
        d, dt, col = self.schema.dataset, self.schema.dataset_type, self.schema.collection
        row = c.execute(select(dt.c.name, col.c.name.label("run"), d.c.data_id_key).select_from(
            d.join(dt, d.c.dataset_type_id == dt.c.id).join(col, d.c.run_id == col.c.id))
            .where(d.c.id == dataset_id)).first()
        return f"{dataset_id}" if row is None else f"{row.name} {{{row.data_id_key}}} in run {row.run!r} ({dataset_id})"

    def registered_paths_under(self, folder: str) -> dict[str, str]:
        """Datastore paths registered under ``folder`` (relative to the root) -> dataset id.

        A range on the path index, so the planner can check a new run's folder holds nobody else's files at little cost.
        """
        l = self.schema.dataset_location
        prefix = folder.rstrip("/") + "/"
        upper = prefix[:-1] + chr(ord("/") + 1)
        with self.engine.connect() as c:
            return dict(c.execute(select(l.c.path, l.c.dataset_id).where(l.c.path >= prefix, l.c.path < upper)).all())

    def record_quanta(self, run: str, quanta: Sequence[Mapping[str, Any]]) -> list[DatasetRef]:
        """Register finished quanta in one transaction: their outputs and provenance, all or nothing.

        Outputs replace ``clobber``ed old ones. Each item holds quantum_id, task, task_class, data_id_key, config_hash,
        outputs [(dataset type, data ID, location, id)], input_ids, provenance, clobber.
        """
        with self.transaction() as c:
            run_id, _ = self._require_collection(run, c)
            clobber = [i for q in quanta for i in q.get("clobber", ())]
            if clobber:
                self.remove_datasets(clobber, c)
            by_type: dict[str, list] = {}
            for q in quanta:
                for dataset_type, data_id, loc, ds_id in q["outputs"]:
                    by_type.setdefault(dataset_type, []).append((data_id, loc, ds_id))
            refs: list[DatasetRef] = []
            for dataset_type, items in by_type.items():
                refs.extend(self.insert_datasets(dataset_type, run, [(d, l) for d, l, _ in items], c,
                                                 ids=[i for _, _, i in items], expanded=True))
            q_rows, io_rows = [], []
            for q in quanta:
                prov = q["provenance"]
                q_rows.append({"id": q["quantum_id"], "run_id": run_id, "task": q["task"], "task_class": q["task_class"],
                               "data_id_key": q["data_id_key"], "config_hash": q["config_hash"],
                               "host": prov.get("host"), "slurm_job_id": prov.get("slurm_job_id"),
                               "started": prov.get("started"), "ended": prov.get("ended"),
                               "packages": json.dumps(prov.get("packages", {}))})
                io_rows += [{"quantum_id": q["quantum_id"], "dataset_id": i, "role": "input"}
                            for i in dict.fromkeys(q["input_ids"])]
                io_rows += [{"quantum_id": q["quantum_id"], "dataset_id": o[3], "role": "output"} for o in q["outputs"]]
            _insert_many(c, self.schema.quantum, q_rows)
            if io_rows:
                _insert_many(c, self.schema.quantum_io, io_rows)
            return refs

    def existing_dataset_ids(self, ids: Iterable[str]) -> set[str]:
        ids = list(ids)
        d = self.schema.dataset
        out: set[str] = set()
        with self.engine.connect() as c:
            for i in range(0, len(ids), 500):
                out.update(c.execute(select(d.c.id).where(d.c.id.in_(ids[i:i + 500]))).scalars())
        return out

    def quantum_provenance(self, dataset_id: str) -> dict | None:
        """The quantum that wrote a dataset, with its inputs: what made this file, from what, how."""
        q, io = self.schema.quantum, self.schema.quantum_io
        with self.engine.connect() as c:
            # The role as a literal: a generic plan (PostgreSQL's, for a statement psycopg prepared after five runs)
            # cannot prove that role = $1 meets the partial index's condition; role = 'output' always does.
            qid = c.execute(select(io.c.quantum_id).where(io.c.dataset_id == dataset_id, sql_text(OUTPUT_ROLE))).scalar()
            if qid is None:
                return None
            row = c.execute(select(q).where(q.c.id == qid)).mappings().one()  # quantum_io refers to it
            inputs = list(c.execute(select(io.c.dataset_id).where(io.c.quantum_id == qid, io.c.role == "input")).scalars())
        out = dict(row)
        out["packages"] = json.loads(out["packages"] or "{}")
        out["inputs"] = inputs
        return out

    def _ref_columns(self):
        d, l, dt, col = self.schema.dataset, self.schema.dataset_location, self.schema.dataset_type, self.schema.collection
        mtime = l.c[MTIME_COLUMN] if self._has_mtime else literal(None, BigInteger).label(MTIME_COLUMN)
        return [d.c.id, dt.c.name.label("dataset_type"), col.c.name.label("run"), l.c.path, l.c.checksum,
                l.c.size, l.c.formatter, mtime] + [d.c[dim.name] for dim in self.universe]

    def _refs_from(self, rows) -> list[DatasetRef]:
        out = []
        for r in rows:
            dt = self.get_dataset_type(r.dataset_type)
            data_id = {dim: getattr(r, dim) for dim in self.universe.data_id_order(dt.dimensions)}
            out.append(DatasetRef(r.id, dt, data_id, r.run, r.path, r.checksum, r.size, r.formatter, r.mtime_ns))
        return out

    def _base_select(self, extra_from=None):
        d, l, dt, col = self.schema.dataset, self.schema.dataset_location, self.schema.dataset_type, self.schema.collection
        j = d.join(dt, d.c.dataset_type_id == dt.c.id).join(col, d.c.run_id == col.c.id).outerjoin(
            l, l.c.dataset_id == d.c.id)
        return j

    def _where(self, where: str, binds, column) -> Any:
        node = parse_where(where or "")
        if node is None:
            return None
        return compile_where(node, types=self.universe.where_types, column=column, binds=binds or {}, text=where)

    def query_datasets(self, dataset_type: str, collections: str | Sequence[str], where: str = "",
                       binds: Mapping[str, Any] | None = None, *, find_first: bool = True,
                       data_id: Mapping[str, Any] | None = None) -> list[DatasetRef]:
        """Datasets of the types matching ``dataset_type`` (a name, a glob, or a comma list) in ``collections``.

        With ``find_first`` (the default) each data ID yields the dataset from the first collection in the
        search order that has one, as a pipeline input lookup would.
        """
        types = self.query_dataset_types(dataset_type)
        if not types and not any(ch in dataset_type for ch in "*?[,"):
            self.get_dataset_type(dataset_type)  # raises, naming the known ones
        search = self.resolve_collections(collections)
        out: list[DatasetRef] = []
        for dt in types:
            out.extend(self._query_one_type(dt, search, where, binds, find_first, data_id))
        return out

    def _query_one_type(self, dt: DatasetType, search: list[str], where: str, binds, find_first: bool,
                        data_id: Mapping[str, Any] | None) -> list[DatasetRef]:
        d, tg = self.schema.dataset, self.schema.tagged
        expanded = set(self.universe.expanded(dt.dimensions))
        node = parse_where(where or "")
        joins: dict[str, Any] = {}

        def column(dim: str, attr: str | None):
            if dim not in expanded:
                raise WhereError(f"where: {dim!r} is not a dimension of {dt.name} "
                                 f"(its dimensions: {', '.join(self.universe.expanded(dt.dimensions))})")
            dimension = self.universe[dim]
            if attr is None or attr == dimension.key_name:
                return d.c[dim]
            table = joins.get(dim)
            if table is None:
                table = self.schema.dimensions[dim].alias(f"w_{dim}")
                joins[dim] = table
            return table.c[attr]

        clause = None
        if node is not None:
            clause = compile_where(node, types=self.universe.where_types, column=column, binds=binds or {}, text=where)
        ids = {name: self._require_collection(name) for name in search}
        rank = {info[0]: i for i, info in enumerate(ids.values())}
        run_ids = [i for i, t in ids.values() if t == CollectionType.RUN]
        tag_ids = [i for i, t in ids.values() if t == CollectionType.TAGGED]
        dt_id = self._dataset_type_id(dt.name)
        base = self._base_select()
        for dim, table in joins.items():
            keys = self.universe.required([dim])
            key_col = self.universe[dim].key_name
            base = base.join(table, and_(*[(table.c[key_col] if k == dim else table.c[k]) == d.c[k] for k in keys]))
        conds = [d.c.dataset_type_id == dt_id]
        if clause is not None:
            conds.append(clause)
        if data_id:
            for k, v in data_id.items():
                if k not in expanded:
                    raise DataIdError(f"{k!r} is not a dimension of {dt.name}")
                conds.append(d.c[k] == self.universe.coerce(k, v))
        rows: list[tuple[int, Any]] = []
        with self.engine.connect() as c:
            if run_ids:
                q = select(*self._ref_columns(), d.c.run_id.label("_coll")).select_from(base).where(
                    d.c.run_id.in_(run_ids), *conds)
                rows.extend((rank[r._coll], r) for r in c.execute(q))
            if tag_ids:
                q = select(*self._ref_columns(), tg.c.collection_id.label("_coll")).select_from(
                    base.join(tg, tg.c.dataset_id == d.c.id)).where(tg.c.collection_id.in_(tag_ids), *conds)
                rows.extend((rank[r._coll], r) for r in c.execute(q))
        key_dims = self.universe.required(dt.dimensions)
        rows.sort(key=lambda x: (tuple(getattr(x[1], k) for k in key_dims), x[0]))
        if find_first:
            picked, seen = [], set()
            for _, r in rows:
                key = tuple(getattr(r, k) for k in key_dims)
                if key not in seen:
                    seen.add(key)
                    picked.append(r)
            return self._refs_from(picked)
        return self._refs_from(r for _, r in rows)

    def find_dataset(self, dataset_type: str, data_id: Mapping[str, Any], collections: str | Sequence[str]) -> DatasetRef:
        dt = self.get_dataset_type(dataset_type)
        did = self.universe.normalize(dt.dimensions, data_id)
        key_only = {k: did[k] for k in self.universe.required(dt.dimensions)}
        refs = self.query_datasets(dt.name, collections, data_id=key_only)
        if not refs:
            coll = collections if isinstance(collections, str) else ",".join(collections)
            raise MissingDatasetError(f"no {dt.name} for {key_only} in collections [{coll}]")
        return refs[0]

    def get_dataset(self, dataset_id: str) -> DatasetRef | None:
        d = self.schema.dataset
        q = select(*self._ref_columns()).select_from(self._base_select()).where(d.c.id == str(dataset_id))
        with self.engine.connect() as c:
            refs = self._refs_from(c.execute(q))
        return refs[0] if refs else None

    def find_by_checksum(self, checksums: Iterable[str]) -> dict[str, DatasetRef]:
        l = self.schema.dataset_location
        checksums = list(checksums)
        out: dict[str, DatasetRef] = {}
        with self.engine.connect() as c:
            for i in range(0, len(checksums), 500):
                q = select(*self._ref_columns()).select_from(self._base_select()).where(
                    l.c.checksum.in_(checksums[i:i + 500]))
                for ref in self._refs_from(c.execute(q)):
                    if ref.checksum is not None:  # never, for a registered location
                        out.setdefault(ref.checksum, ref)
        return out

    def all_locations(self) -> Iterator[DatasetRef]:
        q = select(*self._ref_columns()).select_from(self._base_select()).order_by(self.schema.dataset.c.id)
        with self.engine.connect() as c:
            yield from self._refs_from(c.execute(q))

    def associate(self, tagged: str, refs: Sequence[DatasetRef]) -> None:
        """Add datasets to a TAGGED collection (one dataset per type and data ID in it)."""
        with self.transaction() as c:
            cid, ctype = self._require_collection(tagged, c)
            if ctype != CollectionType.TAGGED:
                raise ConflictError(f"{tagged!r} is a {ctype.value} collection, not TAGGED")
            rows = [{"collection_id": cid, "dataset_id": r.id, "dataset_type_id": self._dataset_type_id(r.name),
                     "data_id_key": self.universe.data_id_key(r.dataset_type.dimensions, r.data_id)} for r in refs]
            try:
                if rows:
                    c.execute(self.schema.tagged.insert(), rows)
            except IntegrityError:
                raise ConflictError(f"TAGGED collection {tagged!r} already holds a dataset of the same type and "
                                    "data ID as one being associated") from None

    def remove_datasets(self, ids: Iterable[str], conn: Connection | None = None) -> None:
        """Forget datasets by id (their files are the datastore's business)."""
        ids = [str(i) for i in ids]

        def _do(c: Connection) -> None:
            for i in range(0, len(ids), 500):
                c.execute(self.schema.dataset.delete().where(self.schema.dataset.c.id.in_(ids[i:i + 500])))

        if conn is not None:
            _do(conn)
        else:
            with self.transaction() as c:
                _do(c)

    def count_datasets(self) -> int:
        with self.engine.connect() as c:
            return c.execute(select(func.count()).select_from(self.schema.dataset)).scalar_one()

    # -- data IDs -----------------------------------------------------------------------------
    def query_data_ids(self, dimensions: Sequence[str], where: str = "", binds: Mapping[str, Any] | None = None,
                       *, datasets: str | None = None, collections: str | Sequence[str] | None = None) -> list[dict]:
        """Distinct data IDs over ``dimensions`` that exist in the dimension records.

        With ``datasets``: only those for which a dataset of that type exists in ``collections``.
        """
        if not dimensions:
            raise DataIdError("query_data_ids needs at least one dimension")
        node = parse_where(where or "")
        refd = {dim for dim, _ in referenced_identifiers(node, binds or {})} if node is not None else set()
        for dim in refd:
            self.universe[dim]
        want = self.universe.data_id_order(list(dimensions))
        cover = set(self.universe.expanded(list(dimensions) + sorted(refd)))
        tables = self._covering_tables(cover)
        from_: FromClause | None = None
        cols: dict[str, Any] = {}
        for dim in tables:
            table = self.schema.dimensions[dim]
            dcols = {c.name: c for c in table.columns}
            own = {d: dcols[d] for d in self.universe.expanded([dim]) if d != dim and d in dcols}
            own[dim] = dcols[self.universe[dim].key_name]
            if from_ is None:
                from_ = table
            else:
                shared = [d for d in own if d in cols]
                on = and_(*[own[d] == cols[d] for d in shared]) if shared else sql_text("1=1")
                from_ = from_.join(table, on)
            for d, c in own.items():
                cols.setdefault(d, c)
        attr_tables = {d: self.schema.dimensions[d] for d in tables}
        joins: dict[str, FromClause] = {}

        def column(dim: str, attr: str | None):
            if dim not in cols:
                raise WhereError(f"where: {dim!r} is not related to {', '.join(dimensions)}")
            dimension = self.universe[dim]
            if attr is None or attr == dimension.key_name:
                return cols[dim]
            if dim in attr_tables:
                return attr_tables[dim].c[attr]
            table = joins.setdefault(dim, self.schema.dimensions[dim].alias(f"w_{dim}"))
            return table.c[attr]

        clause = None
        if node is not None:
            clause = compile_where(node, types=self.universe.where_types, column=column, binds=binds or {}, text=where)
        assert from_ is not None, "no dimension table to query"  # every query covers at least one dimension
        for dim, alias in joins.items():
            keys = self.universe.required([dim])
            key_col = self.universe[dim].key_name
            from_ = from_.join(alias, and_(*[(alias.c[key_col] if k == dim else alias.c[k]) == cols[k] for k in keys]))
        conds = [clause] if clause is not None else []
        if datasets is not None:
            if collections is None:
                raise DataIdError("restricting data IDs by dataset type needs --collections")
            refs = self.query_datasets(datasets, collections)
            with_dataset = {tuple(r.data_id.get(d) for d in want if d in r.data_id) for r in refs}
            dims_in = [d for d in want if refs and d in refs[0].data_id]
        q = select(*[cols[d].label(d) for d in want]).select_from(from_).where(*conds).distinct().order_by(
            *[cols[d] for d in want])
        with self.engine.connect() as conn:
            result = [dict(r._mapping) for r in conn.execute(q)]
        if datasets is not None:
            result = [r for r in result if tuple(r[d] for d in dims_in) in with_dataset]
        return result

    def _covering_tables(self, cover: set[str]) -> list[str]:
        """Dimension tables to join so that every dimension in ``cover`` has a column, fewest first."""
        chosen: list[str] = []
        have: set[str] = set()
        candidates = [d.name for d in self.universe]
        while not cover <= have:
            best = max(candidates, key=lambda n: (len((set(self.universe.expanded([n])) & cover) - have),
                                                  -len(self.universe.expanded([n]))))
            gain = (set(self.universe.expanded([best])) & cover) - have
            if not gain:
                break
            chosen.append(best)
            have |= set(self.universe.expanded([best]))
            candidates.remove(best)
        return chosen
