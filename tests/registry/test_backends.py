"""The registry on PostgreSQL as on SQLite: created by URL, reopened from butler.yaml, versioned, migrated on open,
verified; a server that cannot be reached and an SQLite writer lock held too long are one clear line each."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner
from conftest import drop_databases
from sqlalchemy import text

from openastro_parsl.butler import Butler
from openastro_parsl.cli.butler import main as butler_main
from openastro_parsl.errors import RepositoryError
from openastro_parsl.registry.refs import DatasetType
from openastro_parsl.registry.schema import MTIME_COLUMN, PATH_INDEX
from openastro_parsl.registry.sqlite_tuning import BUSY_TIMEOUT_ENV

RAW = DatasetType("raw", ("instrument", "exposure"), "RawImage")


def _loc(i: int) -> dict:
    return {"path": f"raw/all/f{i}.fits", "checksum": f"{i:064x}", "size": 10 + i, "formatter": "fits", "mtime_ns": i}


@pytest.mark.both_backends
def test_each_repository_opens_its_own_backend_again(populated, registry_backend):
    reg = populated.registry
    assert reg.backend == registry_backend
    reg.register_dataset_type(RAW)
    reg.register_run("raw/all")
    reg.insert_datasets(RAW, "raw/all", [({"instrument": "lco1m", "exposure": i}, _loc(i)) for i in (1, 2, 3)])
    again = Butler(populated.root)
    assert again.registry.url == reg.url and again.registry.backend == registry_backend
    refs = again.query_datasets("raw", "raw/all", where="exposure.day_obs > 20260301 AND band = 'g'")
    assert [r.data_id["exposure"] for r in refs] == [2] and refs[0].mtime_ns == 2
    assert again.registry.registered_paths_under("raw/all") == {r.path: r.id for r in again.query_datasets(
        "raw", "raw/all")}
    checked, problems = again.verify()  # no files were written: every one is missing
    assert checked == 3 and len(problems) == 3 and all(p.startswith("missing file") for p in problems)


def test_cli_creates_a_postgresql_repository_and_every_command_opens_it(tmp_path, postgres_server):
    prefix = f"oat_cli_{tmp_path.name[-12:].lower().replace('-', '_')}_"
    url = f"{postgres_server.replace('+psycopg', '')}/{prefix}repo"
    try:
        res = CliRunner().invoke(butler_main, ["create", str(tmp_path / "repo"), "--registry", url])
        assert res.exit_code == 0, res.output
        assert yaml.safe_load((tmp_path / "repo" / "butler.yaml").read_text())["registry"]["db"] == url
        assert not (tmp_path / "repo" / "registry.sqlite3").exists()
        res = CliRunner().invoke(butler_main, ["query-collections", str(tmp_path / "repo")])
        assert res.exit_code == 0, res.output
        res = CliRunner().invoke(butler_main, ["verify", str(tmp_path / "repo")])
        assert res.exit_code == 0 and "0" in res.output, res.output
        again = CliRunner().invoke(butler_main, ["create", str(tmp_path / "again"), "--registry", url])
        assert again.exit_code != 0 and "not empty" in again.output and "Traceback" not in again.output
    finally:
        drop_databases(postgres_server, prefix)


def _with_pg(butler: Butler, sql: str) -> None:
    with butler.registry.engine.begin() as c:
        c.execute(text(sql))
    butler.registry.close()


@pytest.mark.both_backends
def test_schema_version_is_checked_on_open(butler):
    _with_pg(butler, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(RepositoryError, match="schema version 99, made by a newer openastro-parsl"):
        Butler(butler.root)


@pytest.mark.both_backends
def test_older_repositories_gain_the_path_index_and_mtime_column_on_open(butler):
    _with_pg(butler, f"DROP INDEX {PATH_INDEX}")
    _with_pg(butler, f"ALTER TABLE dataset_location DROP COLUMN {MTIME_COLUMN}")
    reg = Butler(butler.root).registry
    from sqlalchemy import inspect

    with reg.engine.connect() as c:
        insp = inspect(c)
        assert PATH_INDEX in {ix["name"] for ix in insp.get_indexes("dataset_location")}
        assert MTIME_COLUMN in {col["name"] for col in insp.get_columns("dataset_location")}


def test_a_server_that_is_down_is_one_line(tmp_path):
    url = "postgresql://postgres@127.0.0.1:9/oat_nobody"  # the discard port: nothing listens
    res = CliRunner().invoke(butler_main, ["create", str(tmp_path / "repo"), "--registry", url])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "cannot be reached" in res.output and "bin/postgres-local start" in res.output
    (tmp_path / "repo").mkdir(exist_ok=True)
    (tmp_path / "repo" / "butler.yaml").write_text(yaml.safe_dump({"registry": {"db": url}}))
    with pytest.raises(RepositoryError, match="oat_nobody cannot be reached"):
        Butler(tmp_path / "repo")


def test_an_sqlite_write_lock_held_too_long_is_one_line(tmp_path, monkeypatch):
    butler = Butler.create(tmp_path / "repo")
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, "0.3")
    other = Butler(butler.root)
    with butler.registry.transaction() as c:  # holds the write lock
        butler.registry.register_run("held", conn=c)
        with pytest.raises(RepositoryError, match=r"is busy: another process held its write lock for more than 0.3 s"):
            other.registry.register_run("waiting")
    other.registry.register_run("waiting")  # the lock is free again
    assert {c.name for c in Butler(butler.root).query_collections()} == {"held", "waiting"}


def test_an_sqlite_writer_that_read_first_waits_instead_of_failing(tmp_path):
    """A write transaction takes the lock when it begins, so a read inside it cannot go stale and fail the write."""
    import threading

    butler = Butler.create(tmp_path / "repo")
    other = Butler(butler.root)
    started = threading.Event()

    def second() -> None:
        started.wait()
        other.registry.register_run("second")  # waits for the first writer's lock

    t = threading.Thread(target=second)
    t.start()
    with butler.registry.transaction() as c:
        c.execute(text("SELECT count(*) FROM collection"))
        started.set()
        t.join(0.3)
        butler.registry.register_run("first", conn=c)
    t.join(10)
    assert {c.name for c in Butler(butler.root).query_collections()} == {"first", "second"}


@pytest.mark.both_backends
def test_two_writers_of_the_same_new_records_at_once_both_succeed(butler):
    """The second writer finds the records only when the first commits: it compares with them, as if it had come
    after (PostgreSQL: a unique-key race retried once; SQLite: the second waits for the write lock)."""
    import threading

    other = Butler(butler.root).registry
    result: dict = {}

    def second() -> None:
        try:
            result["n"] = other.sync_dimension_records("band", [{"name": "z"}, {"name": "y"}])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    with butler.registry.transaction() as c:
        butler.registry.sync_dimension_records("band", [{"name": "z"}], conn=c)
        t = threading.Thread(target=second)
        t.start()
        t.join(0.5)  # it is waiting for us
        assert t.is_alive()
    t.join(30)
    assert result == {"n": 1}  # only y was new to it
    assert sorted(r["name"] for r in Butler(butler.root).registry.dimension_records("band")) == ["y", "z"]


@pytest.mark.both_backends
def test_a_repository_of_universe_v1_gains_the_new_metadata_columns_on_open(registry_url):
    from openastro_parsl.registry.registry import Registry
    from openastro_parsl.registry.universe import DimensionUniverse

    text = DimensionUniverse.default().text
    for line in [ln for ln in text.splitlines() if ln.strip().split(":")[0] in ("period", "epoch", "duration",
                                                                                 "stellar_mass")]:
        text = text.replace(line + "\n", "")
    old = DimensionUniverse(text.replace(f"\nversion: {DimensionUniverse.default().version}\n", "\nversion: 1\n"))
    assert old.version == 1 and "period" not in old["target"].metadata
    url = registry_url("v1")
    reg = Registry.create(url, old)
    reg.sync_dimension_records("field", [{"name": "f", "ra": 1.0, "dec": 2.0}])
    reg.sync_dimension_records("target", [{"name": "t", "field": "f", "ra": 1.0, "dec": 2.0, "kind": "variable"}])
    reg.close()
    reg = Registry(url)
    assert reg.universe.version == DimensionUniverse.default().version
    assert reg.dimension_records("target")[0]["period"] is None
    assert reg.update_dimension_records("target", [{"name": "t", "period": 2.5}])["updated"] == 1
    reg.close()
    again = Registry(url)
    assert again.dimension_records("target")[0]["period"] == 2.5
    again.close()
