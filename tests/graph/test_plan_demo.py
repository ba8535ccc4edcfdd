"""Planning real pipelines over the demo survey."""

from collections import Counter

import pytest
from testdata import QA

from openastro_parsl.graph.explain import explain_data_id
from openastro_parsl.graph.planner import Planner, PlanningError
from openastro_parsl.pipeline.pipeline import load_pipeline


def _plan(demo, where="", spec=QA):
    p = Planner(demo.butler, load_pipeline(spec), inputs=["demo/defaults"], output_run="u/t/plan", where=where)
    return p, p.plan()


def test_qa_graph_matches_the_survey(demo):
    truth = demo.truth
    good = [e for e in truth["exposures"] if e["file"] not in {c["file"] for c in truth["corrupt_files"]}]
    _, g = _plan(demo)
    counts = g.counts_by_task()
    assert counts["frameStats"] == len(good) == len(demo.report.ingested)
    bands = {e["band"] for e in good}
    assert counts["fieldQa"] == len(bands)
    assert counts["targetCoverage"] == len(truth["targets"]) * len(bands)
    per_band = Counter(e["band"] for e in good)
    for q in g.by_task("fieldQa"):
        assert len(q.inputs["stats"]) == per_band[q.data_id["band"]]


def test_where_on_demo(demo):
    truth = demo.truth
    _, g = _plan(demo, "instrument = 'lco1m' AND band = 'r'")
    n = sum(1 for e in truth["exposures"] if e["instrument"] == "lco1m" and e["band"] == "r")
    assert g.counts_by_task()["frameStats"] == n
    _, g = _plan(demo, "target = 'OA-T1'")
    assert g.counts_by_task()["targetCoverage"] == 2


def test_explain_a_quarantined_frame(demo):
    """The truncated slt40 frame has a readable header, so its data ID is known, yet no raw: explain says so."""
    from astropy.io import fits

    truncated = next(c for c in demo.truth["corrupt_files"] if c["problem"] == "truncated")
    header = fits.getheader(demo.butler.root / "quarantine" / truncated["file"])
    planner, g = _plan(demo)
    text = explain_data_id(g, planner, f"instrument='slt40' AND exposure={header['EXPID']}")
    assert "frameStats: no quantum — no raw dataset for it" in text
    assert "fieldQa: no quantum" in text


def test_unknown_band_empty_graph(demo):
    with pytest.raises(PlanningError, match="task 'frameStats' found no data"):
        _plan(demo, "band = 'z'")
