"""Certified calibrations: validity ranges in a CALIBRATION collection, and the planner's lookup per night.

The `populated` repository has exposures 1-4 of lco1m (nights 20260301-20260304, bands r g r g) and 5-6 of
ota80. Masters are tiny images put in two runs; what matters here is which one each quantum gets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from click.testing import CliRunner
from sqlalchemy import func, select

from openastro_parsl.cli.butler import main as butler_main
from openastro_parsl.datastore.image import Image
from openastro_parsl.errors import ConflictError, DataIdError, MissingDatasetError
from openastro_parsl.graph.planner import Planner, PlanningError
from openastro_parsl.pipeline.pipeline import load_pipeline
from openastro_parsl.registry import calibs
from openastro_parsl.registry.refs import CollectionType, DatasetType

pytestmark = pytest.mark.both_backends
IMAGE = Path(__file__).resolve().parents[2] / "pipelines" / "image.yaml"
RAW = DatasetType("raw", ("instrument", "exposure"), "RawImage")
BIAS = DatasetType("masterBias", ("instrument",), "Image")
DARK = DatasetType("masterDark", ("instrument",), "Image")
FLAT = DatasetType("masterFlat", ("instrument", "band"), "Image")


def _img(value: float) -> Image:
    return Image(np.full((4, 4), value, np.float32))


def _masters(butler, run: str, value: float, instruments=("lco1m",)) -> None:
    for inst in instruments:
        butler.put(_img(value), BIAS, {"instrument": inst}, run=run)
        butler.put(_img(value), DARK, {"instrument": inst}, run=run)
        for band in ("g", "r"):
            butler.put(_img(value), FLAT, {"instrument": inst, "band": band}, run=run)


@pytest.fixture
def repo(populated):
    b = populated
    for i in range(1, 7):
        b.put(_img(0.0), RAW, {"instrument": "lco1m" if i <= 4 else "ota80", "exposure": i}, run="raw/all")
    for field in ("demo1", "demo2"):
        b.put(Table({"id": [1], "ra": [150.1], "dec": [2.2], "g": [15.0], "r": [14.5], "g_err": [0.01],
                     "r_err": [0.01]}), DatasetType("refcat", ("field",), "Table"), {"field": field}, run="refcats")
    _masters(b, "calib/a", 1.0)
    _masters(b, "calib/b", 2.0)
    return b


def _rows(butler) -> int:
    if not calibs._exists(butler.registry):
        return 0
    t = calibs._table(butler.registry)
    with butler.registry.engine.connect() as c:
        return c.execute(select(func.count()).select_from(t)).scalar_one()


def _plan(butler, spec: str, inputs, instruments=("lco1m",)):
    pipeline = load_pipeline(spec, overrides=[f"isr:instruments=[{','.join(instruments)}]"])
    return Planner(butler, pipeline, inputs=list(inputs), output_run="u/t/isr").plan()


def _master_run_of(graph, exposure: int) -> str:
    q = next(q for q in graph.quanta.values() if q.task == "isr" and q.data_id["exposure"] == exposure)
    return graph.datasets[q.inputs["masterBias"][0]].run


def test_certify_then_each_exposure_gets_the_master_of_its_night(repo):
    done = calibs.certify(repo.registry, "calib/a", "calib/all", begin="20260301", end="20260303")
    assert len(done) == 4 and {c.ref.name for c in done} == {"masterBias", "masterDark", "masterFlat"}
    calibs.certify(repo.registry, "calib/b", "calib/all", begin=20260304, end=20260331)
    assert repo.registry.collection_type("calib/all") == CollectionType.CALIBRATION
    graph = _plan(repo, f"{IMAGE}#isr", ["raw/all", "calib/all"])
    assert sorted(q.data_id["exposure"] for q in graph.quanta.values()) == [1, 2, 3, 4]  # ota80 not selected
    assert [_master_run_of(graph, e) for e in (1, 2, 3, 4)] == ["calib/a", "calib/a", "calib/a", "calib/b"]
    q4 = next(q for q in graph.quanta.values() if q.data_id["exposure"] == 4)
    flat = graph.datasets[q4.inputs["masterFlat"][0]]
    assert flat.data_id["band"] == "g" and flat.run == "calib/b"  # exposure 4 is a g frame


def test_the_first_calibration_collection_of_the_inputs_wins(repo):
    calibs.certify(repo.registry, "calib/a", "calib/one", begin="20260301", end="20260331")
    calibs.certify(repo.registry, "calib/b", "calib/two", begin="20260301", end="20260331")
    g = _plan(repo, f"{IMAGE}#isr", ["raw/all", "calib/two", "calib/one"])
    assert {_master_run_of(g, e) for e in (1, 2, 3, 4)} == {"calib/b"}
    repo.registry.set_chain("calib/chain", ["calib/one", "calib/two"])
    g = _plan(repo, f"{IMAGE}#isr", ["raw/all", "calib/chain"])
    assert {_master_run_of(g, e) for e in (1, 2, 3, 4)} == {"calib/a"}


def test_a_night_outside_every_range_names_exposure_night_and_what_to_run(repo):
    calibs.certify(repo.registry, "calib/a", "calib/all", begin="20260301", end="20260302")
    with pytest.raises(PlanningError) as err:
        _plan(repo, f"{IMAGE}#isr", ["raw/all", "calib/all"])
    text = str(err.value)
    assert "masterBias {instrument='lco1m'} needed by task 'isr' for exposure 3 (night 20260303)" in text
    assert "for exposure 4 (night 20260304)" in text and "certified only for 20260301-20260302" in text
    assert "certify-calibrations" in text
    with pytest.raises(PlanningError, match="none certified in the CALIBRATION collections"):
        _plan(repo, f"{IMAGE}#isr", ["raw/all"])


def test_bad_certifications_are_refused_and_change_nothing(repo):
    calibs.certify(repo.registry, "calib/a", "calib/all", begin="20260301", end="20260310")
    before = _rows(repo)
    with pytest.raises(ConflictError, match=r"masterBias \{instrument='lco1m'\} is already certified in 'calib/all' "
                                            r"for 20260301-20260310, which overlaps 20260305-20260320"):
        calibs.certify(repo.registry, "calib/b", "calib/all", begin="20260305", end="20260320")
    with pytest.raises(DataIdError, match="not a night YYYYMMDD"):
        calibs.certify(repo.registry, "calib/b", "calib/all", begin="2026031", end="20260320")
    with pytest.raises(DataIdError, match="ends before it begins"):
        calibs.certify(repo.registry, "calib/b", "calib/all", begin="20260320", end="20260311")
    with pytest.raises(ConflictError, match="already exists as RUN"):
        calibs.certify(repo.registry, "calib/b", "raw/all", begin="20260311", end="20260320")
    with pytest.raises(MissingDatasetError, match="holds no"):
        calibs.certify(repo.registry, "refcats", "calib/all", begin="20260311", end="20260320")
    with pytest.raises(MissingDatasetError, match="does not exist"):
        calibs.certify(repo.registry, "calib/nope", "calib/all", begin="20260311", end="20260320")
    assert _rows(repo) == before
    assert not repo.registry.has_collection("calib/new")
    calibs.certify(repo.registry, "calib/b", "calib/all", begin="20260311", end="20260320")  # adjacent: fine
    assert _rows(repo) == before * 2


def test_certify_cli_one_line_errors(repo):
    runner = CliRunner()
    ok = runner.invoke(butler_main, ["certify-calibrations", str(repo.root), "calib/a", "calib/all",
                                     "--begin", "20260301", "--end", "20260331"])
    assert ok.exit_code == 0, ok.output
    assert "4 dataset(s) certified into calib/all for nights 20260301-20260331" in ok.output
    bad = runner.invoke(butler_main, ["certify-calibrations", str(repo.root), "calib/b", "calib/all",
                                      "--begin", "20260330", "--end", "20260402"])
    assert bad.exit_code != 0
    assert bad.output.strip().count("\n") == 0 and "overlaps 20260330-20260402" in bad.output
    listed = runner.invoke(butler_main, ["query-calibrations", str(repo.root), "calib/all"])
    assert listed.exit_code == 0 and listed.output.count("20260301-20260331") == 4 and "calib/a" in listed.output


def test_isr_feeds_plate_solving_where_it_runs_and_the_raw_elsewhere(repo):
    """`connections: {raw: [postIsrImage, raw]}`: the ISR'd frame for the selected instrument, the raw for
    the others (frames reduced by their observatory); with no instrument selected the plan is as without ISR."""
    calibs.certify(repo.registry, "calib/a", "calib/all", begin="20260301", end="20260331")
    g = _plan(repo, f"{IMAGE}#isr,plateSolve", ["raw/all", "refcats", "calib/all"])
    solve = {q.data_id["exposure"]: graph_input(g, q) for q in g.quanta.values() if q.task == "plateSolve"}
    assert solve == {1: "postIsrImage", 2: "postIsrImage", 3: "postIsrImage", 4: "postIsrImage", 5: "raw", 6: "raw"}
    none = load_pipeline(f"{IMAGE}#isr,plateSolve")  # the pipeline's default: isr for no instrument
    g0 = Planner(repo, none, inputs=["raw/all", "refcats"], output_run="u/t/plain").plan()
    plain = Planner(repo, load_pipeline(f"{IMAGE}#plateSolve", overrides=["plateSolve:connections={}"]),
                    inputs=["raw/all", "refcats"], output_run="u/t/plain").plan()
    assert g0.counts_by_task() == plain.counts_by_task() == {"plateSolve": 6}  # isr switched off: not planned
    assert sorted(q.id for q in g0.quanta.values()) == sorted(q.id for q in plain.quanta.values())
    assert {graph_input(g0, q) for q in g0.quanta.values()} == {"raw"}


def graph_input(graph, quantum) -> str:
    return graph.datasets[quantum.inputs["raw"][0]].dataset_type


def test_validity_index_bisects_per_collection():
    idx: calibs.ValidityIndex[str] = calibs.ValidityIndex()
    idx.add(("lco1m",), 1, 20260101, 20260131, "late-jan")
    idx.add(("lco1m",), 0, 20260110, 20260115, "mid-jan")
    idx.add(("lco1m",), 1, 20260201, 20260228, "feb")
    assert idx.find(("lco1m",), 20260112) == "mid-jan"  # rank 0 searched first
    assert idx.find(("lco1m",), 20260105) == "late-jan"
    assert idx.find(("lco1m",), 20260215) == "feb"
    assert idx.find(("lco1m",), 20260301) is None and idx.find(("ota80",), 20260215) is None
    assert idx.ranges(("lco1m",)) == [(20260101, 20260131), (20260110, 20260115), (20260201, 20260228)]
