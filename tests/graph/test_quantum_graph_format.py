"""Quantum graph files: version 3 (columns) written and read back as the graph planned, version 2 still read.

The same planned graphs (the QA pipeline, and the coadd-shaped benchmark pipeline with and without skipped quanta)
saved as version 2 and 3 load as one graph, quantum by quantum and edge by edge; a version 2 file written before
columns loads; odd graphs (mixed data ID keys, a missing connection, tasks interleaved) keep every detail; damage
is one GraphFormatError naming the file.
"""

import gzip
import hashlib
import importlib.util
import json
import uuid
from pathlib import Path

import pytest
from testdata import QA

from openastro_parsl.butler import Butler
from openastro_parsl.datastore.datastore import dataset_relpath_maker, dataset_relpaths
from openastro_parsl.errors import DatastorePathError
from openastro_parsl.graph.planner import Planner
from openastro_parsl.graph.quantum_graph import (
    DatasetNode,
    GraphFormatError,
    Quantum,
    QuantumGraph,
    TaskInfo,
    dataset_uuid,
    dataset_uuids,
    quantum_uuid,
    quantum_uuids,
)
from openastro_parsl.pipeline.pipeline import load_pipeline

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "plan_scaling.py"

# Written by the version 2 code (HEAD before columns) from the graph ``_small_graph`` builds: 2 tasks, a multiple
# input, an empty prerequisite list, a clobber list, records of two dimensions.
_V2_GRAPH = (
    '{"format":"openastro-qgraph","version":2,"saved":"2026-12-06T01:39:29+0000","header":{"output_run":"u/t/fmt"'
    ',"inputs":["raw/all"],"where":"","created":"2026-12-06T00:00:00+0000"},"tasks":{"frameStats":{"label":"frame'
    'Stats","class_path":"openastro_parsl.tasks.qa.FrameStatsTask","config":{"clip":3.0},"config_hash":"000000000'
    '00000000000000000000000","dimensions":["instrument","exposure"],"connections":{"raw":{"dataset_type":"raw","'
    'dimensions":["instrument","exposure"],"storage_class":"StructuredData","multiple":false,"kind":"input","mini'
    'mum":1,"lazy":false},"stats":{"dataset_type":"frameStats","dimensions":["instrument","exposure"],"storage_cl'
    'ass":"StructuredData","multiple":false,"kind":"output","minimum":1,"lazy":false}},"resources":{"memory_mb":5'
    '00},"related_records":[]},"fieldQa":{"label":"fieldQa","class_path":"openastro_parsl.tasks.qa.FieldQaTask","'
    'config":{},"config_hash":"11111111111111111111111111111111","dimensions":["field","band"],"connections":{"st'
    'ats":{"dataset_type":"frameStats","dimensions":["instrument","exposure"],"storage_class":"StructuredData","m'
    'ultiple":true,"kind":"input","minimum":1,"lazy":false},"refcat":{"dataset_type":"refcat","dimensions":["htm7'
    '"],"storage_class":"StructuredData","multiple":true,"kind":"prerequisite","minimum":1,"lazy":false},"qa":{"d'
    'ataset_type":"fieldQa","dimensions":["field","band"],"storage_class":"StructuredData","multiple":false,"kind'
    '":"output","minimum":1,"lazy":false}},"resources":{},"related_records":["target"]}},"dataset_types":{"raw":{'
    '"dimensions":["instrument","exposure"],"storage_class":"RawImage","formatter":"fits-image"}},"runs":["raw/al'
    'l","u/t/fmt"],"records":{"exposure":{"instrument=lco1m,exposure=1":{"instrument":"lco1m","id":1,"exposure":1'
    ',"exptime":30.0},"instrument=lco1m,exposure=2":{"instrument":"lco1m","id":2,"exposure":2,"exptime":60.0}},"t'
    'arget":{"target=T1":{"name":"T1","target":"T1","field":"F1","ra":150.1,"dec":2.2}}},"datasets":{"raw":{"dims'
    '":["instrument","exposure"],"rows":[["r-1",0,"raw/all/raw/lco1m/raw_lco1m_1.fits","fits-image","abababababab'
    'abababababababababababababababababababababababababab",1,2880,1700000000000000001,"lco1m",1],["r-2",0,"raw/al'
    'l/raw/lco1m/raw_lco1m_2.fits","fits-image","abababababababababababababababababababababababababababababababab'
    '",1,5760,1700000000000000002,"lco1m",2]]},"frameStats":{"dims":["instrument","exposure"],"rows":[["567474df-'
    '970c-58ae-b61a-863058bb0980",1,"u/t/fmt/frameStats/lco1m/frameStats_lco1m_1.json","json",null,0,null,null,"l'
    'co1m",1],["2cda5275-eda5-51e1-bf7a-a6ed06293b90",1,"u/t/fmt/frameStats/lco1m/frameStats_lco1m_2.json","json"'
    ',null,0,null,null,"lco1m",2]]},"fieldQa":{"dims":["field","band"],"rows":[["03960d95-a859-50d8-920f-25b8b1f0'
    'af9f",1,"u/t/fmt/fieldQa/F1/fieldQa_F1_r.json","json",null,0,null,null,"F1","r"]]}},"quanta":{"frameStats":{'
    '"dims":["instrument","exposure"],"rows":[["cdc6e150-a018-5ee4-90ab-52c83168d465",["lco1m",1],{"raw":[0]},{"s'
    'tats":[2]},[]],["a4892b6e-917e-5468-b230-5bcab5a5d360",["lco1m",2],{"raw":[1]},{"stats":[3]},["old-stats-2"]'
    ']]},"fieldQa":{"dims":["field","band"],"rows":[["c4319ae5-eaf1-5401-9da6-a4cacffe7bc0",["F1","r"],{"stats":['
    '2,3],"refcat":[]},{"qa":[4]},[]]]}},"order":["cdc6e150-a018-5ee4-90ab-52c83168d465","a4892b6e-917e-5468-b230'
    '-5bcab5a5d360","c4319ae5-eaf1-5401-9da6-a4cacffe7bc0"]}'
)


def _doc(path: Path) -> dict:
    return json.loads(gzip.decompress(path.read_bytes()))


def _same_graph(a: QuantumGraph, b: QuantumGraph) -> None:
    """Equal in every part, quanta in the same order, each quantum's data ID and connections in the same order."""
    assert list(a.quanta.items()) == list(b.quanta.items())
    for qa, qb in zip(a.quanta.values(), b.quanta.values(), strict=True):
        assert (list(qa.data_id), list(qa.inputs), list(qa.outputs)) == (list(qb.data_id), list(qb.inputs),
                                                                          list(qb.outputs))
    assert a.datasets == b.datasets
    assert all(list(a.datasets[i].data_id) == list(n.data_id) for i, n in b.datasets.items())
    assert (a.records, a.tasks, a.dataset_types, a.header) == (b.records, b.tasks, b.dataset_types, b.header)


def _round_trips(g: QuantumGraph, tmp_path: Path) -> None:
    for version in (2, 3):
        path = tmp_path / f"g{version}.qgraph"
        g.save(path, version=version)
        assert _doc(path)["version"] == version
        _same_graph(QuantumGraph.load(path), g)


def _bench():
    spec = importlib.util.spec_from_file_location("plan_scaling", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _digest(g: QuantumGraph) -> str:
    """Every quantum (in order) and predicted output; existing datasets by type and data ID (their ids are random)."""
    def ref(i):
        n = g.datasets[i]
        return f"{n.dataset_type}:{sorted(n.data_id.items())}" if n.exists else i
    rows = [[q.id, q.task, sorted(q.data_id.items()), {c: [ref(i) for i in v] for c, v in q.inputs.items()},
             {c: [ref(i) for i in v] for c, v in q.outputs.items()}, q.clobber] for q in g.quanta.values()]
    outs = sorted([n.id, n.dataset_type, n.run, n.path, n.formatter, sorted(n.data_id.items())]
                  for n in g.datasets.values() if not n.exists)
    return hashlib.sha256(json.dumps([rows, outs]).encode()).hexdigest()


def test_planned_graphs_round_trip_alike_in_versions_2_and_3(small_repo, tmp_path):
    g = Planner(small_repo, load_pipeline(QA), inputs=["defaults"], output_run="u/t/fmt").plan()
    assert g.counts_by_task() == {"frameStats": 6, "fieldQa": 2, "targetCoverage": 2}
    _round_trips(g, tmp_path)
    doc = _doc(tmp_path / "g3.qgraph")
    stats = next(b for b in doc["datasets"] if b["type"] == "frameStats")
    assert stats["run"] == {"same": doc["runs"].index("u/t/fmt")} and stats["exists"] == {"same": False}
    assert stats["checksum"] == stats["size"] == stats["mtime_ns"] == {"same": None}
    qa = next(b for b in doc["quanta"] if b["task"] == "fieldQa")
    assert qa["inputs"]["stats"]["n"] == [3, 3] and "n" not in qa["outputs"]["summary"] and doc["order"] is None


def test_coadd_shaped_plans_are_unchanged_and_round_trip(tmp_path):
    """The benchmark's pipeline, fresh and half done (skipped quanta): the same graphs as planned before columns
    (digests taken with the version 2 planner), saved and read back alike in both versions."""
    bench = _bench()
    (tmp_path / "pipeline.yaml").write_text(bench.PIPELINE)
    bench.build(tmp_path, 500, 0.5)
    butler = Butler(tmp_path / "repo")
    expected = {
        "u/bench/fresh": ({"skyCorr": 48, "makeWarp": 432, "assembleCoadd": 108, "detection": 108},
                          "88733c27a81f4f13d6a6f28edc2680f0a11bc02dd55bc6a3c17abdfdead084d6"),
        "u/bench/run": ({"skyCorr": 24, "makeWarp": 215, "assembleCoadd": 57, "detection": 54},
                        "a65c926bcfa1044162224a31c5a079083e69ceceda9f6f6d26976dfa832e08cc"),
    }
    for run, (counts, digest) in expected.items():
        skip = [run] if run == "u/bench/run" else []
        g = Planner(butler, load_pipeline(tmp_path / "pipeline.yaml"), inputs=["calexps"], output_run=run,
                    skip_existing_in=skip).plan()
        assert (g.counts_by_task(), _digest(g)) == (counts, digest)
        _round_trips(g, tmp_path)


def _small_graph(run: str = "u/t/fmt") -> QuantumGraph:
    raw = [DatasetNode(f"r-{e}", "raw", {"instrument": "lco1m", "exposure": e}, "raw/all",
                       f"raw/all/raw/lco1m/raw_lco1m_{e}.fits", "fits-image", "ab" * 32, True, 2880 * e,
                       1_700_000_000_000_000_000 + e) for e in (1, 2)]
    stats = [DatasetNode(dataset_uuid(run, "frameStats", f"instrument=lco1m,exposure={e}"), "frameStats",
                         {"instrument": "lco1m", "exposure": e}, run,
                         f"u/t/fmt/frameStats/lco1m/frameStats_lco1m_{e}.json", "json", None, False) for e in (1, 2)]
    qa = DatasetNode(dataset_uuid(run, "fieldQa", "field=F1,band=r"), "fieldQa", {"field": "F1", "band": "r"}, run,
                     "u/t/fmt/fieldQa/F1/fieldQa_F1_r.json", "json", None, False)
    q1 = Quantum(quantum_uuid(run, "frameStats", "instrument=lco1m,exposure=1"), "frameStats",
                 {"instrument": "lco1m", "exposure": 1}, {"raw": [raw[0].id]}, {"stats": [stats[0].id]})
    q2 = Quantum(quantum_uuid(run, "frameStats", "instrument=lco1m,exposure=2"), "frameStats",
                 {"instrument": "lco1m", "exposure": 2}, {"raw": [raw[1].id]}, {"stats": [stats[1].id]}, ["old-stats-2"])
    q3 = Quantum(quantum_uuid(run, "fieldQa", "field=F1,band=r"), "fieldQa", {"field": "F1", "band": "r"},
                 {"stats": [stats[0].id, stats[1].id], "refcat": []}, {"qa": [qa.id]})

    def conn(dt, dims, kind, multiple=False):
        return {"dataset_type": dt, "dimensions": dims, "storage_class": "StructuredData", "multiple": multiple,
                "kind": kind, "minimum": 1, "lazy": False}
    tasks = {
        "frameStats": TaskInfo("frameStats", "openastro_parsl.tasks.qa.FrameStatsTask", {"clip": 3.0}, "0" * 32,
                               ("instrument", "exposure"), {"raw": conn("raw", ["instrument", "exposure"], "input"),
                               "stats": conn("frameStats", ["instrument", "exposure"], "output")}, {"memory_mb": 500}),
        "fieldQa": TaskInfo("fieldQa", "openastro_parsl.tasks.qa.FieldQaTask", {}, "1" * 32, ("field", "band"),
                            {"stats": conn("frameStats", ["instrument", "exposure"], "input", True),
                             "refcat": conn("refcat", ["htm7"], "prerequisite", True),
                             "qa": conn("fieldQa", ["field", "band"], "output")}, {}, ("target",))}
    records = {"exposure": {f"instrument=lco1m,exposure={e}": {"instrument": "lco1m", "id": e, "exposure": e,
                                                                "exptime": 30.0 * e} for e in (1, 2)},
               "target": {"target=T1": {"name": "T1", "target": "T1", "field": "F1", "ra": 150.1, "dec": 2.2}}}
    header = {"output_run": run, "inputs": ["raw/all"], "where": "", "created": "2026-12-06T00:00:00+0000"}
    dataset_types = {"raw": {"dimensions": ["instrument", "exposure"], "storage_class": "RawImage",
                             "formatter": "fits-image"}}
    return QuantumGraph(header, tasks, dataset_types, {d.id: d for d in raw[:1] + stats[:1] + raw[1:] + stats[1:] + [qa]},
                        {q.id: q for q in (q1, q2, q3)}, records)


def test_a_version_2_file_still_loads_and_version_2_is_still_written_alike(tmp_path):
    path = tmp_path / "v2.qgraph"
    path.write_bytes(gzip.compress(_V2_GRAPH.encode()))
    old = QuantumGraph.load(path)
    want = _small_graph()
    _same_graph(old, QuantumGraph(want.header, want.tasks, want.dataset_types,
                                  {i: want.datasets[i] for i in ["r-1", "r-2"] + [i for i in want.datasets
                                                                                  if not i.startswith("r-")]},
                                  want.quanta, want.records))
    assert old.datasets["r-2"].size == 5760 and old.quanta[quantum_uuid("u/t/fmt", "frameStats",
                                                                       "instrument=lco1m,exposure=2")].clobber == [
        "old-stats-2"]
    old.save(tmp_path / "again.qgraph", version=2)
    again, before = _doc(tmp_path / "again.qgraph"), json.loads(_V2_GRAPH)
    again.pop("saved"), before.pop("saved")
    assert again == before


def test_odd_graphs_keep_every_detail(tmp_path):
    """Quanta of one task with other data ID keys, one without a connection, tasks interleaved, 1, 1.0 and True."""
    g = _small_graph()
    (q1, q2, q3) = g.quanta.values()
    q2.data_id = {"instrument": "lco1m", "exposure": 2, "day_obs": None}  # other keys: a block of its own
    del q3.inputs["refcat"]
    odd = Quantum("q-odd", "frameStats", {"exposure": True}, {"raw": ["r-1", "r-2"]}, {})
    g.quanta = {q1.id: q1, q3.id: q3, odd.id: odd, q2.id: q2}  # frameStats, fieldQa, frameStats: not block order
    for i, v in zip(["r-1", "r-2"], [1, 1.0], strict=True):
        g.datasets[i].size = v
    g.records["exposure"]["instrument=lco1m,exposure=2"]["exptime"] = True
    g.records["mixed"] = {"a": {"x": 1}, "b": {"y": 2}}
    path = tmp_path / "odd.qgraph"
    g.save(path)
    doc = _doc(path)
    assert len(doc["quanta"]) == 4 and doc["order"] == [0, 3, 1, 2]
    assert doc["records"]["mixed"] == {"rows": {"a": {"x": 1}, "b": {"y": 2}}}
    back = QuantumGraph.load(path)
    _same_graph(back, g)
    assert [type(back.datasets[i].size) for i in ("r-1", "r-2")] == [int, float]
    assert back.records["exposure"]["instrument=lco1m,exposure=2"]["exptime"] is True


_DAMAGE = {
    "a position past the datasets": lambda d: d["quanta"][0]["inputs"]["raw"].update(at=[0, 99]),
    "a negative position": lambda d: d["quanta"][0]["inputs"]["raw"].update(at=[0, -1]),
    "a column too short": lambda d: d["datasets"][0].update(path=d["datasets"][0]["path"][:1]),
    "counts that do not add up": lambda d: d["quanta"][1]["inputs"]["stats"].update(n=[3]),
    "a run that is not there": lambda d: d["datasets"][0].update(run={"same": 7}),
    "an unknown task": lambda d: d["quanta"][1].update(task="nope"),
    "an order that is not one": lambda d: d.update(order=[0, 0, 1]),
    "ids fewer than items": lambda d: d["quanta"][0].update(id=d["quanta"][0]["id"][:1]),
}


@pytest.mark.parametrize("damage", sorted(_DAMAGE))
def test_damaged_version_3_files_are_one_clear_error(tmp_path, damage):
    path = tmp_path / "g.qgraph"
    _small_graph().save(path)
    doc = _doc(path)
    _DAMAGE[damage](doc)
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))
    with pytest.raises(GraphFormatError, match=str(path)):
        QuantumGraph.load(path)


def test_an_output_path_edited_out_of_its_run_is_refused_at_load(tmp_path):
    path = tmp_path / "g.qgraph"
    _small_graph().save(path)
    doc = _doc(path)
    stats = next(b for b in doc["datasets"] if b["type"] == "frameStats")
    stats["path"][1] = "raw/all/raw/lco1m/raw_lco1m_1.fits"
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))
    with pytest.raises(DatastorePathError, match="outside its run's folder"):
        QuantumGraph.load(path)


def test_unknown_version_to_write_is_refused(tmp_path):
    with pytest.raises(GraphFormatError, match="version 4"):
        _small_graph().save(tmp_path / "g.qgraph", version=4)


def test_ids_and_paths_made_in_bulk_are_those_made_one_by_one():
    keys = [f"instrument=lco1m,exposure={e}" for e in range(50)] + ["", "band=r,ü=1"]
    assert dataset_uuids("u/t/x", "frameStats", keys) == [dataset_uuid("u/t/x", "frameStats", k) for k in keys]
    assert quantum_uuids("u/t/x", "frameStats", keys) == [quantum_uuid("u/t/x", "frameStats", k) for k in keys]
    ns = uuid.UUID("8f1c7f4e-5d0b-4b7e-9a55-0e6b8f3b2a10")
    assert quantum_uuids("r", "t", ["k=1"]) == [str(uuid.uuid5(ns, "quantum:r:t:k=1"))]
    data_ids = [{"instrument": "LSST Cam", "visit": 1, "patch": "7/8", "exposure": "..", "band": ""},
                {"instrument": "L", "visit": 2, "patch": 3, "exposure": 5, "band": "é%"}]
    for run, dataset_type, dims, ext in [("u/a b%c", "warp", ("instrument", "visit", "patch"), ".fits"),
                                         ("u/x", "raw", ("exposure",), ".json"), ("r", "t%1", ("band", "visit"), ".x%y")]:
        one = dataset_relpath_maker(run, dataset_type, dims, ext)
        assert dataset_relpaths(run, dataset_type, dims, data_ids, ext) == [one(d) for d in data_ids]
    with pytest.raises(DatastorePathError, match="more than the file system"):  # measured and refused alike
        dataset_relpaths("r", "t", ("band", "visit"), [{"band": "x" * 300, "visit": 1}], ".f")
