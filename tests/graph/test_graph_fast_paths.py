"""The planner's fast paths give what the plain functions give: ids, paths, and graphs that load back."""

import gzip
import json
import math
import random
import uuid

import pytest

from openastro_parsl.datastore.datastore import dataset_relpath, dataset_relpath_maker
from openastro_parsl.errors import DatastorePathError
from openastro_parsl.graph.quantum_graph import (
    _NS,
    DatasetNode,
    Quantum,
    QuantumGraph,
    TaskInfo,
    dataset_uuid,
    dataset_uuids,
    quantum_uuid,
    quantum_uuids,
)


def test_batch_uuids_are_uuid5():
    rng = random.Random(7)
    for _ in range(500):
        run = "".join(rng.choice("ab/é:_1") for _ in range(rng.randint(1, 12)))
        key = f"instrument=LSSTCam,visit={rng.randint(0, 10**9)},name={rng.choice(['x', 'é', '', '{}'])}"
        assert quantum_uuids(run, "makeWarp", [key]) == [quantum_uuid(run, "makeWarp", key)] \
            == [str(uuid.uuid5(_NS, f"quantum:{run}:makeWarp:{key}"))]
        assert dataset_uuids(run, "warp", [key]) == [dataset_uuid(run, "warp", key)] \
            == [str(uuid.uuid5(_NS, f"dataset:{run}:warp:{key}"))]


@pytest.mark.parametrize("dims", [(), ("a",), ("a", "b"), ("a", "b", "c")])
def test_relpath_maker_matches_relpath(dims):
    rng = random.Random(len(dims))
    values = [1, -3, "x", "é:/", "..", ".", "", "z" * 70, "y" * 300]
    for run in ("u/bench/run", "a//b", "x é:y"):
        for dataset_type in ("warp", "w" * 250):
            make = dataset_relpath_maker(run, dataset_type, dims, ".fits")
            for _ in range(40):
                data_id = {d: rng.choice(values) for d in dims}
                try:
                    want = dataset_relpath(run, dataset_type, dims, data_id, ".fits")
                except DatastorePathError as exc:
                    with pytest.raises(DatastorePathError, match="more than the file system"):
                        make(data_id)
                    assert "more than" in str(exc)
                    continue
                assert make(data_id) == want


def _graph(record_value, data_id_value):
    run = "u/t/run"
    out = DatasetNode("d-out", "stats", {"exposure": data_id_value}, run, f"u/t/run/stats/stats_{data_id_value}.json",
                      "json", None, False)
    inp = DatasetNode("d-in", "raw", {"exposure": data_id_value}, "raw", "raw/x.fits", "fits", "0" * 64, True, 10, 5)
    q = Quantum("q1", "frameStats", {"exposure": data_id_value}, {"raw": ["d-in"]}, {"stats": ["d-out"]})
    task = TaskInfo("frameStats", "x.Y", {}, "h", ("exposure",), {}, {})
    records = {"exposure": {f"exposure={data_id_value}": {"exposure": data_id_value, "exptime": record_value}}}
    return QuantumGraph({"output_run": run}, {"frameStats": task}, {"raw": {}, "stats": {}},
                        {"d-in": inp, "d-out": out}, {"q1": q}, records)


@pytest.mark.parametrize("record_value, data_id_value", [
    (30.5, 42),                 # all through orjson
    (math.nan, 42),             # records through json (orjson would write null), read back by json
    (math.inf, 2 ** 70),        # and a data ID value orjson cannot write (past 64 bits)
])
def test_save_load_round_trip_of_odd_values(tmp_path, record_value, data_id_value):
    g = _graph(record_value, data_id_value)
    g.save(tmp_path / "g.qgraph")
    doc = json.loads(gzip.decompress((tmp_path / "g.qgraph").read_bytes()))
    assert doc["version"] == 3 and doc["order"] is None  # columns; quanta in their blocks' order
    back = QuantumGraph.load(tmp_path / "g.qgraph")
    assert back.quanta == g.quanta and back.datasets == g.datasets
    got = back.records["exposure"][f"exposure={data_id_value}"]["exptime"]
    assert got == record_value or (math.isnan(got) and math.isnan(record_value))
