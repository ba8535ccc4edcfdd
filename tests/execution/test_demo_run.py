"""The QA pipeline over the demo survey through local HTEX, checked against the survey's truth."""

import math

import pytest
from testdata import QA

from openastro_parsl.execution.site import load_site
from openastro_parsl.execution.submit import Submission
from openastro_parsl.graph.planner import Planner
from openastro_parsl.pipeline.pipeline import load_pipeline


def test_qa_on_the_amateur_frames_matches_truth(demo):
    butler, truth = demo.butler, demo.truth
    graph = Planner(butler, load_pipeline(QA), inputs=["demo/defaults"], output_run="u/t/demo-qa",
                    where="instrument = 'ota80'").plan()
    site, src = load_site(None)
    summary = Submission.start(butler, graph, site, src).run()
    assert summary.ok
    frames = [e for e in truth["exposures"] if e["instrument"] == "ota80"]
    for e in frames:
        stats = butler.get("frameStats", {"instrument": "ota80", "exposure": e["exposure"]}, collections="u/t/demo-qa")
        expected = math.sqrt(e["sky_e_per_px"] + e["read_noise"] ** 2) / e["gain"]  # ADU
        assert stats["noise"] == pytest.approx(expected, rel=0.15), e["file"]
        assert stats["has_wcs"] == e["has_wcs"]
        assert stats["n_sources"] >= 5
    for band in ("g", "r"):
        cov = butler.get("targetCoverage", {"target": "OA-T1", "band": band}, collections="u/t/demo-qa")
        in_band = [e for e in frames if e["band"] == band]
        assert cov["frames"] == len(in_band)
        assert cov["frames_without_wcs"] == sum(not e["has_wcs"] for e in in_band)
        assert cov["frames_containing"] == sum(e["has_wcs"] for e in in_band)
        assert cov["catalogue_id"] is not None
