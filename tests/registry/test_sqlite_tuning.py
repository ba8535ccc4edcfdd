"""What keeps registration fast as the registry fills (docs/scaling.md): SQLite connections tuned from the
environment and reused in LIFO order, and the lean provenance indexes, migrated on open on both backends."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import event, text

from openastro_parsl.butler import Butler
from openastro_parsl.errors import RepositoryError
from openastro_parsl.registry.refs import DatasetType
from openastro_parsl.registry.schema import OLD_INDEXES, OUTPUT_INDEX
from openastro_parsl.registry.sqlite_tuning import CACHE_ENV, CHECKPOINT_ENV, MMAP_ENV

CALEXP = DatasetType("calexp", ("instrument", "exposure"), "Image")
RAW = DatasetType("raw", ("instrument", "exposure"), "RawImage")


def _quanta(first: int, n: int) -> list[dict]:
    """``n`` finished quanta as the submit loop hands them over: one calexp each, made from raw ``exposure``."""
    out = []
    for e in range(first, first + n):
        loc = {"path": f"run/calexp/{e}.fits", "checksum": f"{e:064x}", "size": e, "formatter": "fits", "mtime_ns": e}
        out.append({"quantum_id": f"q-{e:04d}", "task": "calibrate", "task_class": "t.Calibrate",
                    "data_id_key": f"instrument=lco1m,exposure={e}", "config_hash": "0" * 32,
                    "outputs": [("calexp", {"instrument": "lco1m", "exposure": e, "band": "gr"[e % 2],
                                            "field": "demo1"}, loc, f"out-{e:04d}")],
                    "input_ids": [f"raw-{e:04d}"], "clobber": [],
                    "provenance": {"host": "n1", "slurm_job_id": None, "started": 1.0, "ended": 2.0, "packages": {}}})
    return out


def _with_run(butler: Butler) -> Butler:
    butler.registry.register_dataset_type(CALEXP)
    butler.registry.register_run("run")
    return butler


def _pragmas(butler: Butler) -> tuple[int, int, int]:
    with butler.registry.engine.connect() as c:
        return tuple(c.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("cache_size", "mmap_size", "wal_autocheckpoint"))


def test_sqlite_connections_are_tuned_by_default_and_from_the_environment(tmp_path, monkeypatch):
    for env in (CACHE_ENV, MMAP_ENV, CHECKPOINT_ENV):
        monkeypatch.delenv(env, raising=False)
    butler = Butler.create(tmp_path / "repo")
    assert _pragmas(butler) == (-64 * 1024, 2**30, 256 * 256)  # 64 MiB, 1 GiB, 256 MiB of 4 KiB pages
    monkeypatch.setenv(CACHE_ENV, "32")
    monkeypatch.setenv(MMAP_ENV, "0")
    monkeypatch.setenv(CHECKPOINT_ENV, "8")
    assert _pragmas(Butler(butler.root)) == (-32 * 1024, 0, 8 * 256)


def test_a_bad_tuning_value_is_one_line_and_leaves_the_registry_alone(tmp_path, monkeypatch):
    butler = Butler.create(tmp_path / "repo")
    butler.registry.close()
    db = tmp_path / "repo" / "registry.sqlite3"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    monkeypatch.setenv(MMAP_ENV, "lots")
    with pytest.raises(RepositoryError, match=rf"^\${MMAP_ENV}='lots' is not a whole number of MiB >= 0$"):
        Butler(butler.root)
    monkeypatch.setenv(MMAP_ENV, "64")
    monkeypatch.setenv(CACHE_ENV, "0")
    with pytest.raises(RepositoryError, match=rf"^\${CACHE_ENV}='0' is not a whole number of MiB >= 1$"):
        Butler(butler.root)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_sqlite_writes_reuse_the_connection_used_last(populated):
    """SQLite empties a connection's page cache when another one wrote: taking pooled connections in turn would
    begin every registration batch cold."""
    butler = _with_run(populated)
    engine = butler.registry.engine
    with engine.connect(), engine.connect():  # two connections in the pool, as a read nested in a write leaves
        pass
    used: list[int] = []

    def began(conn) -> None:
        if conn.get_execution_options().get("write"):  # a read nested in the first batch takes another one
            used.append(id(conn.connection.dbapi_connection))

    event.listen(engine, "begin", began)
    for i in range(4):
        butler.registry.record_quanta("run", _quanta(1 + 10 * i, 3))
    assert len(used) == 4 and len(set(used)) == 1


@pytest.mark.both_backends
def test_older_repositories_get_the_output_link_index_on_open(populated, registry_backend):
    butler = _with_run(populated)
    butler.registry.record_quanta("run", _quanta(1, 4))
    with butler.registry.engine.begin() as c:  # the indexes as repositories made before them have them
        c.execute(text(f"DROP INDEX {OUTPUT_INDEX}"))
        c.execute(text("CREATE INDEX quantum_io_by_dataset ON quantum_io (dataset_id)"))
        c.execute(text("CREATE INDEX dataset_by_type_key ON dataset (dataset_type_id, data_id_key)"))
    butler.registry.close()
    old = _index_names(butler)
    assert OUTPUT_INDEX not in old and set(OLD_INDEXES) <= old
    again = Butler(butler.root)
    names = _index_names(again)
    assert OUTPUT_INDEX in names and not names & set(OLD_INDEXES)
    assert again.registry.count_datasets() == 4
    prov = again.registry.quantum_provenance("out-0003")
    assert prov is not None and prov["id"] == "q-0003" and prov["inputs"] == ["raw-0003"]
    assert again.registry.quantum_provenance("raw-0003") is None  # an input: no quantum wrote it here
    Butler(butler.root).registry.record_quanta("run", _quanta(5, 1))  # opening again changes nothing
    assert _index_names(again) == names


def _index_names(butler: Butler) -> set[str]:
    with butler.registry.engine.connect() as c:
        if c.dialect.name == "sqlite":
            return set(c.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'")).scalars())
        return set(c.execute(text("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")).scalars())


@pytest.mark.both_backends
def test_the_provenance_lookup_is_served_by_the_output_index(populated, registry_backend):
    butler = _with_run(populated)
    butler.registry.record_quanta("run", _quanta(1, 20))
    seen: list[tuple[str, object]] = []
    engine = butler.registry.engine
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cur, stmt, params, ctx, many: seen.append((stmt, params)) if "quantum_io" in stmt else None)
    assert butler.registry.quantum_provenance("out-0007")["id"] == "q-0007"
    stmt, params = seen[0]
    with engine.connect() as c:
        if registry_backend == "sqlite":
            plan = " ".join(r[-1] for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + stmt, params))
        else:
            c.exec_driver_sql("SET enable_seqscan = off")  # 20 rows: without this a scan is cheaper anyway
            plan = " ".join(r[0] for r in c.exec_driver_sql("EXPLAIN " + stmt, params))
    assert OUTPUT_INDEX in plan, plan


def test_the_lock_wait_takes_seconds_from_the_environment_and_refuses_what_is_not_a_number(monkeypatch):
    from openastro_parsl.registry.sqlite_tuning import BUSY_TIMEOUT_ENV, busy_timeout_s

    monkeypatch.delenv(BUSY_TIMEOUT_ENV, raising=False)
    assert busy_timeout_s() == 60.0
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, "2.5")
    assert busy_timeout_s() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(BUSY_TIMEOUT_ENV, bad)
        with pytest.raises(RepositoryError, match=f"OPENASTRO_REGISTRY_BUSY_TIMEOUT='{bad}' is not a number of "
                                                  "seconds >= 0"):
            busy_timeout_s()
