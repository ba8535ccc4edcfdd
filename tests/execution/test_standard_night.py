"""The demo's standards night, from the command line as ``bin/demo`` runs it: the survey made with its standard
field, the standard field calibrated alone through Parsl, its colour terms pooled and saved, and the science plan
taking them as known. The colour terms are measured from pixels, not given: they must land on the simulator's."""

import os
import subprocess
from pathlib import Path

import pytest

from openastro_parsl.butler import Butler

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
openastro-demo repo --standard-field
openastro-submit -b repo -p "$OPENASTRO/pipelines/image.yaml#calibration" -i demo/defaults -o u/demo/standards \\
    -d "field = 'std1'"
openastro-butler colour-terms repo --collections u/demo/standards --write repo/colour_terms.yaml
openastro-plan -b repo -p "$OPENASTRO/pipelines/openastro.yaml#science" -i demo/defaults -o u/demo/science \\
    -d "field != 'std1'" -C fieldCalibration:repo/colour_terms.yaml --save-qgraph repo/science.qgraph
"""


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    home = tmp_path_factory.mktemp("standards")
    env = {**os.environ, "OPENASTRO": str(ROOT)}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", SCRIPT], cwd=home, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return Butler(home / "repo"), done.stdout


def test_the_standard_field_measures_every_cameras_colour_terms(night):
    from openastro_parsl.pipeline.pipeline import load_pipeline
    from openastro_parsl.sim.instruments import make_instruments

    butler, out = night
    (ref,) = butler.query_datasets("fieldZeropoints", "u/demo/standards")
    assert ref.data_id["field"] == "std1"
    zps = butler.get(ref)
    assert len(zps) == sum(1 for e in _truth(butler)["exposures"] if e["purpose"] == "standard") == 30
    pipeline = load_pipeline(f"{ROOT / 'pipelines' / 'openastro.yaml'}#science", (),
                             override_files=(f"fieldCalibration:{butler.root / 'colour_terms.yaml'}",))
    config = next(t.config for t in pipeline.tasks if t.label == "fieldCalibration")
    truth = {f"{name}/{band}": ct for name, inst in make_instruments("small").items()
             for band, ct in inst.colour_terms.items()}
    assert config.colour_terms_index == "g-r" and sorted(config.colour_terms) == sorted(truth)
    for key, (value, error) in config.colour_terms.items():
        assert 0 < error < 0.006, (key, error)
        assert abs(value - truth[key]) < min(4 * error, 0.01), (key, value, error, truth[key])


def test_the_science_plan_leaves_the_standard_field_out(night):
    from openastro_parsl.graph.quantum_graph import QuantumGraph

    butler, _ = night
    graph = QuantumGraph.load(butler.root / "science.qgraph")
    fields = {q.data_id.get("field") for q in graph.quanta.values()} - {None}
    assert fields == {"demo1"}
    science = [e for e in _truth(butler)["exposures"] if e["purpose"] != "standard"]
    assert sum(1 for q in graph.quanta.values() if q.task == "calibrate") == len(science)
    saved = butler.get(butler.query_datasets("fieldZeropoints", "u/demo/standards")[0]).meta["colour_terms"]
    planned = graph.tasks["fieldCalibration"].config["colour_terms"]
    assert sorted(planned) == sorted(saved)
    assert all(abs(planned[k][0] - saved[k][0]) < 1e-4 for k in saved)


def _truth(butler):
    import json

    from openastro_parsl.demo import SURVEY_DIR

    return json.loads((butler.root / SURVEY_DIR / "truth.json").read_text())


def test_each_field_is_registered_with_its_own_catalogue_rows(night):
    import numpy as np

    butler, _ = night
    stars = _truth(butler)["stars"]
    std = {s["id"] for s in stars if s["field"] == "std1"}
    for field, expected in (("std1", std), ("demo1", {s["id"] for s in stars} - std)):
        rows = butler.get("refcat", {"field": field}, collections="refcats")
        assert set(np.asarray(rows["id"]).tolist()) == expected, field
