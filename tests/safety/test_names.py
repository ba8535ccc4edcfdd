"""Run and collection names cannot collide or escape; two datasets never share a datastore file.

Each test would fail on the code before issue 12: names like ``u//double`` or ``u/a:b`` were accepted and
folded onto another run's folder, data-ID values differing only in a folded character shared one file,
the registry registered a second dataset at a path already taken, and workers wrote wherever a (hand-edited)
graph pointed.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest
from sqlalchemy import inspect, text
from testdata import QA, make_small_repo

from openastro_parsl.datastore.datastore import Datastore, dataset_relpath
from openastro_parsl.errors import CollectionNameError, ConflictError, DatastorePathError, OpenAstroError
from openastro_parsl.graph.planner import Planner, PlanningError
from openastro_parsl.graph.quantum_graph import QuantumGraph
from openastro_parsl.pipeline.pipeline import load_pipeline
from openastro_parsl.registry.names import validate_collection_name
from openastro_parsl.registry.refs import CollectionType, DatasetType
from openastro_parsl.registry.registry import Registry

STATS = DatasetType("stamp", ("instrument", "exposure"), "StructuredData")


@pytest.fixture
def repo(tmp_path):
    """A repository of the test's own, for tests that change it (the others plan against ``small_repo``)."""
    return make_small_repo(tmp_path)


def plan(butler, output_run, **kw):
    return Planner(butler, load_pipeline(QA), inputs=kw.pop("inputs", ["defaults"]), output_run=output_run, **kw).plan()


def _loc(path, n=1):
    return {"path": path, "checksum": f"{n:064x}", "size": 1, "formatter": "json"}


# -- the grammar ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["raw/all", "refcats", "demo/defaults", "defaults", "u/alice/qa", "u/t/demo-qa",
                                  "test_ttv/outputs", "u/alice/run.2026-03-01", "RUN", "x" * 100,
                                  "/".join(["abc"] * 63)])
def test_names_in_use_pass(name):
    assert validate_collection_name(name) == name


@pytest.mark.parametrize("name, says", [
    ("u//double", "component 2 is empty"),
    ("/u/alice", "starts with '/'"),
    ("u/alice/", "ends with '/'"),
    ("u/a:b", "component 2 ('a:b') contains ':'"),
    ("u/caf\u00e9", "contains '\u00e9' (U+00E9)"),
    ("u/a b", "contains ' '"),
    ("u/$(touch x)", "contains '$'"),
    ("u/./x", "component 2 ('.') is '.'"),
    ("../escape", "component 1 ('..') is '..'"),
    ("u/" + "y" * 300, "component 2 ('yyyy"),
    ("/".join(["abcd"] * 60), "is 299 characters long (at most 255)"),
    ("submit/u/x", "first component 'submit'"),
    ("", "empty"),
])
def test_bad_names_say_what_and_where(name, says):
    with pytest.raises(CollectionNameError) as info:
        validate_collection_name(name, "output run")
    msg = str(info.value)
    assert says in msg and "output run name" in msg and "letters, digits, '_', '-' or '.'" in msg
    assert "\n" not in msg


def test_300_character_component_is_a_clear_error_not_oserror():
    with pytest.raises(CollectionNameError, match=r"300 characters long \(at most 100\)"):
        validate_collection_name("u/" + "y" * 300)


# -- the registry refuses to create bad names, still reads old ones ---------------------------------------
@pytest.mark.both_backends
def test_registry_refuses_to_create_bad_names(butler):
    reg = butler.registry
    assert reg.register_run("u/double")
    for make in (lambda: reg.register_run("u//double"), lambda: reg.register_run("u/double:"),
                 lambda: reg.register_collection("u/\u00e9", CollectionType.TAGGED),
                 lambda: reg.set_chain("u/../chain", ["u/double"])):
        with pytest.raises(CollectionNameError):
            make()
    assert [c.name for c in reg.query_collections()] == ["u/double"]


@pytest.mark.both_backends
def test_existing_odd_names_are_still_read(populated):
    """A repository made before the grammar may hold such names: reading and reusing them is not refused."""
    reg = populated.registry
    with reg.engine.begin() as c:
        c.execute(text("INSERT INTO collection (name, type, doc) VALUES ('old:run', 'RUN', '')"))
    reg.register_dataset_type(STATS)
    assert reg.register_run("old:run") is False  # exists: not created, not refused
    reg.insert_datasets(STATS, "old:run", [({"instrument": "lco1m", "exposure": 1}, _loc("old_run/a.json"))])
    reg.set_chain("chain", ["old:run"])
    assert [r.run for r in reg.query_datasets("stamp", "chain")] == ["old:run"]


# -- plan time -----------------------------------------------------------------------------------------------
@pytest.mark.both_backends
def test_double_slash_and_folded_names_refused_at_plan(small_repo):
    g = plan(small_repo, "u/double")
    assert all(g.datasets[i].path.startswith("u/double/") for q in g.quanta.values() for ids in q.outputs.values()
               for i in ids)
    for bad in ("u//double", "u/double/", "u/dou:ble", "u/dou\u00e9ble", "u/" + "y" * 300):
        with pytest.raises(CollectionNameError, match="output run name"):
            plan(small_repo, bad)
    with pytest.raises(CollectionNameError, match="input collection name 'raw//all'"):
        plan(small_repo, "u/t/x", inputs=["raw//all"])
    assert not (small_repo.root / "u").exists() and not (small_repo.root / "submit").exists()


@pytest.mark.both_backends
def test_plan_refuses_to_overwrite_files_of_a_run_that_folds_onto_it(repo):
    """An older repository may already hold ``u//double``, whose files sit in ``u/double/``: planning
    ``u/double`` must not write over them."""
    g = plan(repo, "u/double")
    node = next(n for n in g.datasets.values() if not n.exists and n.dataset_type == "frameStats")
    reg = repo.registry
    with reg.engine.begin() as c:
        c.execute(text("INSERT INTO collection (name, type, doc) VALUES ('u//double', 'RUN', '')"))
    reg.register_dataset_type(DatasetType("frameStats", ("instrument", "exposure"), "StructuredData"))
    reg.insert_datasets("frameStats", "u//double", [(node.data_id, _loc(node.path))])
    says = f"(?s)would overwrite files of other datasets.*{node.path} .*is the file of frameStats@.*u//double"
    with pytest.raises(PlanningError, match=says):
        plan(repo, "u/double")


def test_plan_cli_refuses_bad_name_in_one_line(repo):
    proc = subprocess.run([sys.executable, "-c", "from openastro_parsl.cli.plan import main; main()", "-b",
                           str(repo.root), "-p", str(QA), "-i", "defaults", "-o", "u/" + "z" * 300],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "OSError" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "output run name" in lines[0] and "300 characters long" in lines[0]


# -- datastore paths are injective -------------------------------------------------------------------------
def test_ordinary_paths_unchanged():
    assert dataset_relpath("u/alice/run1", "calexp", ["instrument", "exposure"],
                           {"instrument": "lco1m", "exposure": 1042}, ".fits") == \
        "u/alice/run1/calexp/lco1m/calexp_lco1m_1042.fits"
    assert dataset_relpath("raw/all", "raw", ["instrument", "exposure"], {"instrument": "a_b-c.d+e=f", "exposure": 7},
                           ".fits") == "raw/all/raw/a_b-c.d+e=f/raw_a_b-c.d+e=f_7.fits"


def test_values_differing_in_a_folded_character_get_different_paths():
    values = ["a:b", "a_b", "a/b", "a b", "a%3Ab", "a%b", "caf\u00e9", "cafe", "caf_", "caf__", ".", "..", "_._",
              "_.._", "%2E", "", "__", "%", "a\\b", "WASP-126 b", "WASP-126_b"]
    paths = [dataset_relpath("u/t/r", "lightcurve", ["target", "band"], {"target": v, "band": "r"}, ".ecsv")
             for v in values]
    assert len(set(paths)) == len(values), paths
    for p in paths:
        parts = p.split("/")
        assert "" not in parts and "." not in parts and ".." not in parts
    # the last value too, and across the two positions
    two = {dataset_relpath("r", "t", ["a", "b"], {"a": a, "b": b}, ".json")
           for a in ("x", "x_y", "x:y") for b in ("y", "y_z", "y:z", "")}
    assert len(two) == 12


def test_data_id_value_too_long_for_a_file_name_is_clear():
    with pytest.raises(DatastorePathError, match="more than the file system's 255"):
        dataset_relpath("u/t/r", "lightcurve", ["target", "band"], {"target": "T" * 300, "band": "r"}, ".ecsv")


@pytest.mark.both_backends
def test_registry_refuses_a_second_dataset_at_a_taken_path(populated):
    reg = populated.registry
    reg.register_dataset_type(STATS)
    reg.register_run("u/a")
    reg.register_run("u/b")
    (first,) = reg.insert_datasets(STATS, "u/a", [({"instrument": "lco1m", "exposure": 1}, _loc("shared/x.json"))])
    with pytest.raises(ConflictError, match="'shared/x.json'.*already belongs to dataset stamp .*'u/a'"):
        reg.insert_datasets(STATS, "u/b", [({"instrument": "lco1m", "exposure": 1}, _loc("shared/x.json", 2))])
    with pytest.raises(ConflictError, match="same datastore path"):
        reg.insert_datasets(STATS, "u/b", [({"instrument": "lco1m", "exposure": 2}, _loc("dup.json")),
                                           ({"instrument": "lco1m", "exposure": 3}, _loc("dup.json"))])
    assert [r.id for r in reg.all_locations()] == [first.id]


@pytest.mark.both_backends
def test_older_registry_gets_the_path_check_too(registry_url):
    """A registry made before the check (no path index, even duplicate paths already) opens, and refuses more."""
    url = registry_url("old")
    reg = Registry.create(url)
    reg.sync_dimension_records("instrument", [{"name": "lco1m"}])
    reg.sync_dimension_records("band", [{"name": "r"}])
    reg.sync_dimension_records("field", [{"name": "f"}])
    reg.sync_dimension_records("exposure", [{"instrument": "lco1m", "id": i, "band": "r", "field": "f"}
                                            for i in (1, 2, 3)])
    reg.register_dataset_type(STATS)
    reg.register_run("u/a")
    reg.insert_datasets(STATS, "u/a", [({"instrument": "lco1m", "exposure": 1}, _loc("p1.json"))])
    with reg.engine.begin() as c:
        c.execute(text("DROP INDEX dataset_location_path"))
    reg.close()
    reg = Registry(url)  # index added back on open
    with reg.engine.connect() as c:
        assert "dataset_location_path" in {ix["name"] for ix in inspect(c).get_indexes("dataset_location")}
        c.execute(text("DROP INDEX dataset_location_path"))
        c.commit()
    reg.insert_datasets(STATS, "u/a", [({"instrument": "lco1m", "exposure": 2}, _loc("p2.json"))])
    with reg.engine.begin() as c:  # the old bug: two datasets at one path
        c.execute(text("UPDATE dataset_location SET path='p1.json' WHERE path='p2.json'"))
    reg.close()
    reg = Registry(url)
    with pytest.raises(ConflictError, match="already belongs"):
        reg.insert_datasets(STATS, "u/a", [({"instrument": "lco1m", "exposure": 3}, _loc("p1.json"))])


@pytest.mark.both_backends
def test_put_never_overwrites_a_file_it_did_not_write(populated):
    dt = DatasetType("stamp", ("instrument", "exposure"), "StructuredData")
    ref = populated.put({"a": 1}, dt, {"instrument": "lco1m", "exposure": 1}, run="u/a")
    stray = populated.path(ref).with_name("stamp_lco1m_2.json")
    stray.write_text('{"not": "mine"}')
    with pytest.raises(OpenAstroError, match="already exists in the datastore"):
        populated.put({"a": 2}, dt, {"instrument": "lco1m", "exposure": 2}, run="u/a")
    assert stray.read_text() == '{"not": "mine"}'


# -- outputs stay inside the repository --------------------------------------------------------------------
@pytest.mark.parametrize("rel", ["../escape.json", "u/t/../../../escape.json", "/tmp/escape.json", ""])
def test_write_at_refuses_paths_leaving_the_repository(tmp_path, rel):
    root = tmp_path / "repo"
    root.mkdir()
    store = Datastore(root)
    with pytest.raises(DatastorePathError, match="not inside the repository"):
        store.write_at({"a": 1}, rel.replace("/tmp", str(tmp_path)), "json")
    assert not (tmp_path / "escape.json").exists()
    assert store.write_at({"a": 1}, "u/t/ok.json", "json")["path"] == "u/t/ok.json"


def _edit_graph(src, dst, edit):
    doc = json.loads(gzip.decompress(src.read_bytes()))
    edit(doc)
    dst.write_bytes(gzip.compress(json.dumps(doc).encode()))
    return dst


def _first_output_row(doc):
    for block in doc["datasets"].values():
        for row in block["rows"]:
            if not row[5]:
                return row


@pytest.mark.parametrize("edit, says", [
    (lambda d: _first_output_row(d).__setitem__(2, "../../escape.json"), "outside its run's folder"),
    (lambda d: _first_output_row(d).__setitem__(2, "/tmp/escape.json"), "outside its run's folder"),
    (lambda d: _first_output_row(d).__setitem__(2, "u/t/qa/frameStats/../../../../escape.json"), "outside"),
    (lambda d: _first_output_row(d).__setitem__(2, "raw/all/raw/lco1m/raw_lco1m_100.fits"), "outside its run's folder"),
    (lambda d: d["header"].__setitem__("output_run", "../../elsewhere"), "not inside the repository"),
])
def test_hand_edited_graph_output_paths_refused_at_load(small_repo, tmp_path, edit, says):
    g = plan(small_repo, "u/t/qa")
    g.save(tmp_path / "good.qgraph", version=2)  # rows, edited by hand below (version 3 is columns)
    QuantumGraph.load(tmp_path / "good.qgraph").check_output_paths()
    bad = _edit_graph(tmp_path / "good.qgraph", tmp_path / "bad.qgraph", edit)
    with pytest.raises(DatastorePathError) as info:
        QuantumGraph.load(bad)
    assert str(bad) in str(info.value) and says in str(info.value)


def test_graph_planned_before_names_were_checked_still_loads(small_repo, tmp_path):
    """A run named ``u/t:qa`` before the grammar had its outputs planned under ``u/t_qa/``: still inside it."""
    plan(small_repo, "u/t/qa").save(tmp_path / "good.qgraph", version=2)  # the format of graphs saved then

    def legacy(doc):
        doc["header"]["output_run"] = "u/t:qa"
        for block in doc["datasets"].values():
            for row in block["rows"]:
                if not row[5]:
                    row[2] = row[2].replace("u/t/qa/", "u/t_qa/", 1)

    g = QuantumGraph.load(_edit_graph(tmp_path / "good.qgraph", tmp_path / "old.qgraph", legacy))
    assert g.output_run == "u/t:qa"


def test_graph_whose_outputs_share_a_path_refused(small_repo, tmp_path):
    g = plan(small_repo, "u/t/qa")
    outs = [g.datasets[i] for q in g.by_task("frameStats") for i in q.outputs["stats"]]
    outs[1].path = outs[0].path
    with pytest.raises(DatastorePathError, match="share the path"):
        g.check_output_paths()
