"""Frames without a field (no OBJECT, no pointing) join the nearest defined field after plate solving
(`openastro-butler assign-fields`), and the next plan groups them with that field's frames."""

import pytest
from click.testing import CliRunner
from testdata import QA, make_small_repo, write_frame

from openastro_parsl.astro.wcs import tan_wcs, wcs_cards
from openastro_parsl.cli.butler import main
from openastro_parsl.graph.planner import Planner
from openastro_parsl.ingest.fields import Assignment, FieldAssignError, apply_assignments, plan_assignments
from openastro_parsl.ingest.ingest import ingest_raws
from openastro_parsl.pipeline.pipeline import load_pipeline
from openastro_parsl.registry.refs import DatasetType

WCS_SOLUTION = DatasetType("wcsSolution", ("instrument", "exposure"), "StructuredData")
IMAGE = QA.parent / "image.yaml"


def _amateur(i: int) -> dict:
    """A frame the catch-all reads: a camera, a date, a filter, no OBJECT and no pointing."""
    return {"INSTRUME": "Orion SSDSI", "DATE-OBS": f"2026-03-1{i}T03:00:00", "EXPTIME": 5.0, "FILTER": "r"}


@pytest.fixture
def repo(tmp_path):
    """make_small_repo (lco1m exposures 100..105 in field demo1 at 150.1, +2.2) plus field `far`, three
    unassigned frames and their plate solutions in run u/solve: one near demo1, one 30 deg from any field,
    one that failed to solve."""
    butler = make_small_repo(tmp_path)
    butler.registry.sync_dimension_records("field", [{"name": "far", "ra": 250.4, "dec": 36.5}])
    frames = [write_frame(tmp_path / f"a{i}.fits", _amateur(i), seed=10 + i) for i in range(3)]
    refs = ingest_raws(butler, frames).ingested
    assert [r.data_id["field"] for r in refs] == ["unassigned"] * 3
    solutions = [{"status": "solved", "wcs": wcs_cards(tan_wcs(150.13, 2.18, 1.9, 12.0, False, (32, 32)))},
                 {"status": "solved", "wcs": wcs_cards(tan_wcs(10.0, -60.0, 1.9, 0.0, False, (32, 32)))},
                 {"status": "wcs_failed", "reason": "too few sources", "wcs": {}}]
    for ref, sol in zip(refs, solutions, strict=True):
        butler.put(sol, WCS_SOLUTION, {k: ref.data_id[k] for k in ("instrument", "exposure")}, run="u/solve")
    return butler, [r.data_id["exposure"] for r in refs]


def _inputs(graph, label: str, data_id: dict, connection: str) -> set[int]:
    (q,) = [q for q in graph.by_task(label) if all(q.data_id.get(k) == v for k, v in data_id.items())]
    return {graph.datasets[i].data_id["exposure"] for i in q.inputs[connection]}


def _qa_plan(butler):
    return Planner(butler, load_pipeline(f"{QA}#summary"), inputs=["defaults"], output_run="u/t/qa").plan()


def test_assign_moves_the_solved_frame_and_the_next_plan_groups_it(repo):
    butler, (near, far, failed) = repo
    before = _qa_plan(butler)
    assert _inputs(before, "fieldQa", {"field": "demo1", "band": "r"}, "stats") == {101, 103, 105}
    assert _inputs(before, "fieldQa", {"field": "unassigned", "band": "r"}, "stats") == {near, far, failed}
    raw_path = butler.path(butler.registry.query_datasets("raw", "raw/all", data_id={"exposure": near})[0])

    report = plan_assignments(butler, ["u/solve", "raw/all"], radius_deg=1.0)
    assert [(a.exposure, a.field) for a in report.moved] == [(near, "demo1")]
    assert report.moved[0].separation_deg == pytest.approx(0.036, abs=0.002)
    assert [(a.exposure, round(a.separation_deg)) for a in report.too_far] == [(far, 115)]
    assert [(e, why) for _, e, why in report.unsolved] == [(failed, "plate solution status 'wcs_failed'")]
    rows = apply_assignments(butler.registry, report.moved)
    assert rows == 2  # its raw and its wcsSolution

    rec = butler.registry.dimension_records("exposure", f"exposure = {near}")[0]
    assert rec["field"] == "demo1"
    (raw,) = butler.registry.query_datasets("raw", "raw/all", data_id={"exposure": near})
    assert raw.data_id["field"] == "demo1" and butler.path(raw) == raw_path  # the file does not move
    assert butler.verify()[1] == []
    after = _qa_plan(butler)
    assert _inputs(after, "fieldQa", {"field": "demo1", "band": "r"}, "stats") == {101, 103, 105, near}
    assert _inputs(after, "fieldQa", {"field": "unassigned", "band": "r"}, "stats") == {far, failed}
    assert plan_assignments(butler, ["u/solve", "raw/all"]).moved == []  # nothing left to move


def test_the_coadd_plan_takes_the_assigned_frame(repo):
    butler, (near, _, _) = repo

    def coadd_inputs():
        graph = Planner(butler, load_pipeline(f"{IMAGE}#plateSolve,calibrate,makeRefGrid,warp,normalize,coadd"), inputs=["defaults"], output_run="u/t/img",
                        where="field = 'demo1'").plan()
        (q,) = [q for q in graph.by_task("coadd") if q.data_id["band"] == "r"]
        return {graph.datasets[i].data_id["exposure"] for ids in q.inputs.values() for i in ids}

    assert coadd_inputs() == {101, 103, 105}
    apply_assignments(butler.registry, plan_assignments(butler, ["u/solve", "raw/all"]).moved)
    assert coadd_inputs() == {101, 103, 105, near}


def test_a_failed_assignment_changes_nothing(repo):
    butler, (near, far, _) = repo
    records = butler.registry.dimension_records("exposure")
    stale = [Assignment("orion-ssdsi", far, "far", 0.1, (250.4, 36.5)),
             Assignment("orion-ssdsi", 999, "demo1", 0.1, (150.1, 2.2))]
    with pytest.raises(FieldAssignError, match="exposure=999} is no longer in field unassigned; nothing changed"):
        apply_assignments(butler.registry, stale)
    assert butler.registry.dimension_records("exposure") == records
    with pytest.raises(FieldAssignError, match="--radius must be positive"):
        plan_assignments(butler, ["u/solve"], radius_deg=0)


def test_assign_fields_cli(repo):
    butler, (near, far, failed) = repo

    def run(*args):
        result = CliRunner().invoke(main, [str(a) for a in args])
        return result.exit_code, result.output

    code, out = run("assign-fields", butler.root, "--collections", "u/solve,raw/all", "--dry-run")
    assert code == 0 and f"orion-ssdsi {near}: centre 150.1" in out and "-> field demo1" in out
    assert f"orion-ssdsi {far}:" in out and "left unassigned" in out and "wcs_failed" in out
    assert "would move: moved 1 exposure(s)" in out
    assert butler.registry.dimension_records("exposure", f"exposure = {near}")[0]["field"] == "unassigned"
    code, out = run("assign-fields", butler.root, "--collections", "u/solve,raw/all", "--radius", "2")
    assert code == 0 and out.strip().endswith("moved 1 exposure(s) to their nearest field, 1 beyond the radius, "
                                              "1 without a usable plate solution")
    assert butler.registry.dimension_records("exposure", f"exposure = {near}")[0]["field"] == "demo1"
    code, out = run("assign-fields", butler.root, "--collections", "nope")
    assert code == 1 and out.count("\n") == 1 and "nope" in out
