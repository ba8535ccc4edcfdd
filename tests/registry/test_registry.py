import pytest
from sqlalchemy import create_engine, text

from openastro_parsl.butler import Butler
from openastro_parsl.errors import ConflictError, DataIdError, MissingDatasetError, RepositoryError, WhereError
from openastro_parsl.registry.refs import CollectionType, DatasetType
from openastro_parsl.registry.registry import Registry, create_database, normalize_url
from openastro_parsl.registry.schema import SCHEMA_VERSION

CALEXP = DatasetType("calexp", ("instrument", "exposure"), "NumpyArrays")


def _loc(n):
    return {"path": f"f{n}.npz", "checksum": f"{n:064x}", "size": 1, "formatter": "npz"}


def _insert(reg, run, ids, dt=CALEXP):
    reg.register_dataset_type(dt)
    reg.register_run(run)
    inst = lambda i: "lco1m" if i <= 4 else "ota80"
    return reg.insert_datasets(dt.name, run, [({"instrument": inst(i), "exposure": i},
                                                  {**_loc(i + 100 * len(run)), "path": f"{run}/{dt.name}/f{i}.npz"})
                                                 for i in ids])


def test_sqlite_pragmas_and_schema_version(populated):
    url = populated.registry.url
    with populated.registry.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert c.execute(text("SELECT value FROM meta WHERE key='schema_version'")).scalar() == str(SCHEMA_VERSION)
    assert url.startswith("sqlite:///")


@pytest.mark.both_backends
def test_foreign_and_old_databases_are_refused(registry_url, registry_backend):
    foreign = registry_url("other")
    if registry_backend == "postgresql":
        create_database(foreign)
    engine = create_engine(normalize_url(foreign))
    with engine.begin() as c:
        c.execute(text("CREATE TABLE people (name TEXT)"))
    engine.dispose()
    with pytest.raises(RepositoryError, match="not an openastro-parsl registry"):
        Registry(foreign)
    reg = Registry.create(registry_url("old"))
    with reg.engine.begin() as c:
        c.execute(text("UPDATE meta SET value='0' WHERE key='schema_version'"))
    reg.close()
    with pytest.raises(RepositoryError, match="schema version 0, made by an older"):
        Registry(registry_url("old"))
    with pytest.raises(RepositoryError, match="no registry database .*missing"):
        Registry(registry_url("missing"))


def test_not_a_repo(tmp_path):
    with pytest.raises(RepositoryError, match="does not exist"):
        Butler(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RepositoryError, match="not an openastro-parsl repository.*openastro-butler create"):
        Butler(tmp_path / "plain")


@pytest.mark.both_backends
def test_dimension_record_conflict_leaves_registry_unchanged(populated):
    reg = populated.registry
    with pytest.raises(ConflictError, match="exposure .*already exists with different values.*band"):
        reg.sync_dimension_records("exposure", [{"instrument": "lco1m", "id": 99, "band": "g", "field": "demo1"},
                                                {"instrument": "lco1m", "id": 1, "band": "g", "field": "demo1"}])
    assert not reg.dimension_records("exposure", "exposure = 99")
    # identical records are a no-op
    assert reg.sync_dimension_records("band", [{"name": "g"}]) == 0


@pytest.mark.both_backends
def test_dataset_type_conflict_names_both(populated):
    reg = populated.registry
    reg.register_dataset_type(CALEXP)
    assert reg.register_dataset_type(CALEXP) == CALEXP
    with pytest.raises(ConflictError, match="calexp.*already registered as calexp\\(instrument, exposure\\) as NumpyArrays.*Image"):
        reg.register_dataset_type(DatasetType("calexp", ("instrument", "exposure"), "Image"))


@pytest.mark.both_backends
def test_collections_run_chained_tagged(populated):
    reg = populated.registry
    _insert(reg, "run/a", [1, 2, 3])
    _insert(reg, "run/b", [2, 5])
    reg.set_chain("chain", ["run/b", "run/a"])
    assert reg.resolve_collections("chain") == ["run/b", "run/a"]
    refs = reg.query_datasets("calexp", "chain")
    assert [(r.data_id["exposure"], r.run) for r in refs] == [(1, "run/a"), (2, "run/b"), (3, "run/a"), (5, "run/b")]
    every = reg.query_datasets("calexp", "chain", find_first=False)
    assert len(every) == 5
    reg.register_collection("picked", CollectionType.TAGGED)
    reg.associate("picked", [r for r in every if r.data_id["exposure"] == 3])
    assert [r.data_id["exposure"] for r in reg.query_datasets("calexp", "picked")] == [3]
    with pytest.raises(ConflictError, match="cycle"):
        reg.set_chain("outer", ["chain"])
        reg.set_chain("chain", ["outer"])
    assert reg.resolve_collections("chain") == ["run/b", "run/a"]  # the failed change rolled back
    names = {c.name: c.type for c in reg.query_collections("run/*")}
    assert names == {"run/a": CollectionType.RUN, "run/b": CollectionType.RUN}
    with pytest.raises(MissingDatasetError, match="collection 'nope' does not exist; known: "):
        reg.query_datasets("calexp", "nope")


@pytest.mark.both_backends
def test_duplicate_dataset_in_run_is_refused_atomically(populated):
    reg = populated.registry
    _insert(reg, "run/a", [1])
    with pytest.raises(ConflictError, match="calexp \\{instrument=lco1m,exposure=1\\} already exists in run 'run/a'"):
        reg.insert_datasets("calexp", "run/a", [({"instrument": "lco1m", "exposure": 2}, _loc(7)),
                                               ({"instrument": "lco1m", "exposure": 1}, _loc(8))])
    assert [r.data_id["exposure"] for r in reg.query_datasets("calexp", "run/a")] == [1]


@pytest.mark.both_backends
def test_data_ids_are_expanded_and_validated(populated):
    reg = populated.registry
    (ref,) = _insert(reg, "run/a", [3])
    assert ref.data_id == {"instrument": "lco1m", "exposure": 3, "band": "r", "field": "demo1"}
    with pytest.raises(DataIdError, match="no exposure record"):
        reg.insert_datasets("calexp", "run/a", [({"instrument": "lco1m", "exposure": 77}, _loc(9))])


@pytest.mark.both_backends
def test_query_datasets_where_and_globs(populated):
    reg = populated.registry
    _insert(reg, "run/a", [1, 2, 3, 4, 5, 6])
    _insert(reg, "run/a", [1, 2], DatasetType("calexpBackground", ("instrument", "exposure"), "NumpyArrays"))
    got = lambda where, **kw: sorted(r.data_id["exposure"] for r in reg.query_datasets("calexp", "run/a", where, **kw))
    assert got("band = 'r'") == [1, 3, 5]
    assert got("instrument='lco1m' AND band IN ('g','r') AND exposure.day_obs >= 20260303") == [3, 4]
    assert got("exposure.exptime > 100.0 OR field = 'demo2'") == [4, 5, 6]
    assert got("exposure IN (b1, b2)", binds={"b1": 2, "b2": 6}) == [2, 6]
    assert len(reg.query_datasets("calexp*", "run/a")) == 8
    assert len(reg.query_datasets("*", "run/a")) == 8
    with pytest.raises(WhereError, match="'target' is not a dimension of calexp"):
        reg.query_datasets("calexp", "run/a", "target = 'x'")
    with pytest.raises(WhereError, match="known dimensions: band, exposure, field, instrument, target"):
        reg.query_datasets("calexp", "run/a", "bnad = 'r'")
    with pytest.raises(MissingDatasetError, match="unknown dataset type 'calexq'; registered: calexp, calexpBackground"):
        reg.query_datasets("calexq", "run/a")


@pytest.mark.both_backends
def test_malicious_where_leaves_registry_intact(populated):
    reg = populated.registry
    _insert(reg, "run/a", [1, 2, 3])
    for bad in ["band = 'r'; DROP TABLE dataset", "band = 'r' -- ", "band = 'r' UNION SELECT * FROM dataset"]:
        with pytest.raises(WhereError, match="column"):
            reg.query_datasets("calexp", "run/a", bad)
    assert reg.query_datasets("calexp", "run/a", "band = 'r'' OR ''1''=''1'") == []
    assert reg.count_datasets() == 3


@pytest.mark.both_backends
def test_query_data_ids(populated):
    reg = populated.registry
    rows = reg.query_data_ids(["field", "band"])
    assert rows == [{"band": "g", "field": "demo1"}, {"band": "g", "field": "demo2"}, {"band": "r", "field": "demo1"}]
    assert [r["exposure"] for r in reg.query_data_ids(["exposure"], "exposure.day_obs > 20260304")] == [5, 6]
    assert reg.query_data_ids(["band"]) == [{"band": "g"}, {"band": "r"}]
    _insert(reg, "run/a", [2, 3])
    rows = reg.query_data_ids(["exposure"], datasets="calexp", collections="run/a")
    assert [r["exposure"] for r in rows] == [2, 3]


@pytest.mark.both_backends
def test_a_rolled_back_collection_is_forgotten(butler):
    """A run registered inside a transaction that rolls back does not linger in the registry's cache."""
    reg = butler.registry
    try:
        with reg.transaction() as conn:
            reg.register_run("u/a/run", conn=conn)
            assert reg.has_collection("u/a/run")
            raise RuntimeError("undo")
    except RuntimeError:
        pass
    assert not reg.has_collection("u/a/run")
    assert reg.register_run("u/a/run") is True
