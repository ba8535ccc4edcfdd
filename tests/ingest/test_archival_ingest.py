"""Archival light curves and transit-time tables become datasets the light-curve pipeline plans on."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from openastro_parsl.cli.butler import main as butler_main
from openastro_parsl.graph.planner import Planner
from openastro_parsl.pipeline.pipeline import load_pipeline

from testdata import REAL_DATA

TESS = REAL_DATA / "hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits"
LIGHTCURVE_PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "lightcurve.yaml"


def test_tess_light_curve_is_ingested_and_planned(butler):
    out = CliRunner().invoke(butler_main, ["ingest-lightcurves", str(butler.root), str(TESS), "--target", "WASP-126"])
    assert out.exit_code == 0, out.output
    lc = butler.get("lightcurve", {"target": "WASP-126", "band": "TESS"}, collections="lightcurves/archival")
    assert len(lc) > 10000 and lc["time"].min() > 2458300  # BJD_TDB as JD (sector 1, 2018)
    target = next(r for r in butler.registry.dimension_records("target") if r["name"] == "WASP-126")
    assert target["ra"] == pytest.approx(lc.meta["ra"])
    graph = Planner(butler, load_pipeline(f"{LIGHTCURVE_PIPELINE}#transitSearch,transitTiming"),
                    inputs=["lightcurves/archival"], output_run="u/t/wasp126").plan()
    assert sorted(q.task for q in graph.quanta.values()) == ["transitSearch", "transitTiming"]


def test_transit_times_csv_and_bad_files(butler, tmp_path):
    CliRunner().invoke(butler_main, ["ingest-lightcurves", str(butler.root), str(TESS), "--target", "WASP-126"])
    csv = tmp_path / "times.csv"
    csv.write_text("planet,epoch,time,error\nb,0,2458326.10,0.0005\nb,1,2458329.39,0.0006\nb,3,2458335.96,0.0005\n")
    out = CliRunner().invoke(butler_main, ["ingest-transit-times", str(butler.root), str(csv), "--target", "WASP-126"])
    assert out.exit_code == 0, out.output
    tt = butler.get("transitTimes", {"target": "WASP-126"}, collections="transits/published")
    assert list(tt["epoch"]) == [0, 1, 3] and tt.meta["period"] == pytest.approx(3.2866, abs=2e-3)
    bad = tmp_path / "bad.csv"
    bad.write_text("planet,epoch,time,error\nb,0,2458326.10,0.0005\nb,x,2458329.39,0.0006\n")
    out = CliRunner().invoke(butler_main, ["ingest-transit-times", str(butler.root), str(bad), "--target", "WASP-126"])
    assert out.exit_code == 1 and f"{bad}:3" in out.output
    out = CliRunner().invoke(butler_main, ["ingest-transit-times", str(butler.root), str(csv), "--target", "nobody"])
    assert out.exit_code == 1 and "nobody" in out.output
