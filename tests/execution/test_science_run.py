"""The science pipelines end to end: `pipelines/openastro.yaml#science` planned over the demo survey and run
through a real Parsl HighThroughputExecutor, its results checked against the survey's truth.

One submission serves every test here (planning and running all three branches takes a few minutes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from openastro_parsl.execution.site import load_site
from openastro_parsl.execution.submit import Submission
from openastro_parsl.graph.planner import Planner
from openastro_parsl.pipeline.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
SCIENCE = ROOT / "pipelines" / "openastro.yaml"
RUN = "u/test/science"


@pytest.fixture(scope="module")
def science(demo):
    pipeline = load_pipeline(f"{SCIENCE}#science")
    graph = Planner(demo.butler, pipeline, inputs=["demo/defaults"], output_run=RUN).plan()
    site, src = load_site(None)
    sub = Submission.start(demo.butler, graph, site, src)
    summary = sub.run()
    return demo, graph, sub, summary


def _get(demo, name, data_id):
    return demo.butler.get(name, data_id, collections=RUN)


def test_every_quantum_succeeds_or_has_a_reason(science):
    demo, graph, sub, summary = science
    failed = [(r["task"], r["data_id"], r["message"]) for r in sub.status.rows("WHERE state != 'succeeded' "
                                                                               "AND state != 'no_work'")]
    assert summary.ok, failed[:10]
    per_task = summary.per_task
    good = [e for e in demo.truth["exposures"]]
    assert per_task["plateSolve"]["succeeded"] == len(good)
    # every no-work quantum says why (an unsolved frame, a target with no transit...)
    for row in sub.status.rows("WHERE state = 'no_work'"):
        assert row["message"], row["task"]
    assert demo.butler.verify()[1] == []


def test_plate_solutions_match_the_true_wcs(science):
    demo, graph, sub, summary = science
    from astropy.wcs import WCS

    checked = 0
    for e in demo.truth["exposures"]:
        sol = _get(demo, "wcsSolution", {"instrument": e["instrument"], "exposure": e["exposure"]})
        assert sol["status"] in ("header", "solved"), (e["file"], sol.get("reason"))
        if e["has_wcs"]:
            continue
        solved, true = WCS(sol["wcs"]), WCS(e["wcs"])
        ny, nx = demo.truth["instruments"][e["instrument"]]["shape"]
        yy, xx = np.mgrid[0:ny:16j, 0:nx:16j]
        ra, dec = true.all_pix2world(xx.ravel(), yy.ravel(), 0)
        x, y = solved.all_world2pix(ra, dec, 0)
        rms = float(np.sqrt(np.mean((x - xx.ravel()) ** 2 + (y - yy.ravel()) ** 2)))
        assert rms < 0.3, (e["file"], rms)
        checked += 1
    assert checked >= 10  # the demo strips the WCS of many frames


def test_zero_points_against_truth(science):
    """Per-frame fits (colour term free: with the 6-10 stars of a small camera a few frames miss 0.02 mag) and
    the per-instrument history's re-evaluation at the pooled colour term, which must hold every frame within
    0.02 mag of the truth (known variables are kept out of the fits)."""
    demo, *_ = science
    truth = {(e["instrument"], e["exposure"]): e["zero_point"] for e in demo.truth["exposures"]}
    per_frame = np.abs([_get(demo, "photoCalib", {"instrument": i, "exposure": x})["zp"] - zp
                        for (i, x), zp in truth.items()])
    assert np.median(per_frame) < 0.01, np.sort(per_frame)[-5:]
    pooled = []
    for inst in demo.truth["instruments"]:
        for band in ("g", "r"):
            if demo.butler.registry.query_datasets("zeropointHistory", [RUN], data_id={"instrument": inst, "band": band}):
                hist = _get(demo, "zeropointHistory", {"instrument": inst, "band": band})
                pooled += [abs(row["zp_pooled"] - truth[(inst, int(row["exposure"]))]) for row in hist]
    assert len(pooled) == len(truth)
    assert np.median(pooled) < 0.01 and np.max(pooled) < 0.02, np.sort(pooled)[-5:]


def test_coadds_are_deeper_than_single_frames(science):
    demo, *_ = science
    for band in ("g", "r"):
        coadd = _get(demo, "coadd", {"field": "demo1", "band": band})
        cov = _get(demo, "coaddCoverage", {"field": "demo1", "band": band})
        n = coadd.header["NFRAMES"]
        assert n >= 10
        assert np.nanmax(cov.data) <= n and np.nanmax(cov.data) >= 0.5 * n
        assert np.isfinite(coadd.variance).any()


def test_periods_of_the_variables_and_the_planet(science):
    demo, *_ = science
    for v in demo.truth["variables"]:
        result = _get(demo, "periodogram", {"target": v["name"]})
        assert abs(result["period"] / v["period"] - 1) < 1e-3, (v["name"], result["period"], v["period"])
        assert result["fap"] < 1e-3
    host = demo.truth["planet"]["host"]
    search = _get(demo, "transitSearch", {"target": host})
    assert abs(search["period"] / demo.truth["planet"]["linear_ephemeris"]["period"] - 1) < 1e-3
    times = _get(demo, "transitTimes", {"target": host})
    truth = np.array(demo.truth["planet"]["transit_times"]) + 2400000.5
    nearest = np.array([truth[np.argmin(np.abs(truth - t))] for t in times["t_obs"]])
    z = (np.asarray(times["t_obs"]) - nearest) / np.asarray(times["t_obs_err"])
    assert len(z) >= 4 and np.all(np.abs(z) < 4), z


def test_the_transient_is_alerted(science):
    """The injected transient is alerted once it has appeared; other alerts stay at a few per hundred frames."""
    demo, *_ = science
    tr = demo.truth["transient"]
    on_transient, false, n_frames = 0, 0, 0
    for e in demo.truth["exposures"]:
        did = {"instrument": e["instrument"], "exposure": e["exposure"]}
        if not demo.butler.registry.query_datasets("alerts", [RUN], data_id=did):
            continue
        alerts = demo.butler.get("alerts", did, collections=RUN)
        records = alerts["alerts"] if isinstance(alerts, dict) else alerts
        n_frames += 1
        for a in records:
            sep = np.hypot((a["ra"] - tr["ra"]) * np.cos(np.radians(tr["dec"])), a["dec"] - tr["dec"]) * 3600
            if sep < 3:
                assert e["bjd_tdb_mid"] > tr["mjd_start"], f"alert on the transient before it appeared: {e['file']}"
                on_transient += 1
            else:
                false += 1
    assert n_frames > 100
    assert on_transient >= 10, "the injected transient should be alerted in most frames after it appears"
    assert false <= 0.05 * n_frames, (false, n_frames)
