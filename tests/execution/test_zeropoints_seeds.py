"""Zero-points against the truth over several skies: the demo survey made with five seeds, the calibration subset
(plateSolve, calibrate, fieldCalibration, zeropointHistory) run on each through Parsl, and every exposure's
``zp_pooled`` compared with the simulator's zero-point.

What is asserted, and why not "within 0.02 mag of the truth" alone: the truth defines the zero-point at g-r = 0,
~0.7 mag of colour from the stars, so it moves with the colour term, and the colour term can be known no better
than the catalogue errors of the twenty-odd stars the cameras see allow (0.01-0.03 in CT, whatever the estimator:
with perfect instrumental photometry the joint fit still misses seed 3's r band by 0.024 mag). That part of the
miss is common to an instrument x band. So: each instrument x band's mean miss lies within 3 times its quoted
error (which carries the colour term's, and must stay under 0.02 mag) and under 0.035 mag, and at least 98 % of
the frames of every seed lie within 0.02 mag of their instrument x band's mean miss. The frames beyond a flat
0.02 of the truth are printed for every seed (``-s``). How much of a miss the catalogue alone makes on each sky
(the same fit on perfect photometry): ``benchmarks/zeropoint_limit.py`` and docs/zeropoints.md."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

from openastro_parsl.execution.site import load_site
from openastro_parsl.execution.submit import Submission
from openastro_parsl.graph.planner import Planner
from openastro_parsl.pipeline.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
SEEDS = (42, 3, 5, 7, 11)  # the default seed, then the first four others of the ones measured
RUN = "u/test/zeropoints"


def _calibrate_survey(root, seed):
    from openastro_parsl.demo import make_demo_repo

    demo = make_demo_repo(root / f"seed{seed}", seed=seed, size="small")
    pipeline = load_pipeline(f"{ROOT / 'pipelines' / 'image.yaml'}#calibration")
    graph = Planner(demo.butler, pipeline, inputs=["demo/defaults"], output_run=RUN).plan()
    site, src = load_site(None)
    summary = Submission.start(demo.butler, graph, site, src).run()
    assert summary.ok, f"seed {seed}: the calibration run failed"
    return demo


def _misses(demo):
    """Per exposure: (instrument, band, zp_pooled - truth, zp_pooled_err)."""
    truth = {(e["instrument"], e["exposure"]): e["zero_point"] for e in demo.truth["exposures"]}
    out = []
    for inst in demo.truth["instruments"]:
        for band in ("g", "r"):
            did = {"instrument": inst, "band": band}
            if not demo.butler.registry.query_datasets("zeropointHistory", [RUN], data_id=did):
                continue
            hist = demo.butler.get("zeropointHistory", did, collections=RUN)
            assert set(hist["zp_source"]) == {"field"}, (inst, band)
            out += [(inst, band, float(r["zp_pooled"]) - truth[(inst, int(r["exposure"]))], float(r["zp_pooled_err"]))
                    for r in hist]
    assert len(out) == len(truth)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_zero_points_hold_on_every_sky(seed, tmp_path_factory):
    demo = _calibrate_survey(tmp_path_factory.mktemp("zp"), seed)
    rows = _misses(demo)
    d = np.array([r[2] for r in rows])
    groups = collections.defaultdict(list)
    for inst, band, miss, e in rows:
        groups[(inst, band)].append((miss, e))
    bias = {k: (float(np.mean([m for m, _ in v])), float(np.median([e for _, e in v])), len(v))
            for k, v in sorted(groups.items())}
    print(f"\nseed {seed}: {len(d)} frames, {int(np.sum(np.abs(d) > 0.02))} beyond 0.02 mag, max "
          f"{np.abs(d).max():.4f}, median {np.median(np.abs(d)):.4f}; mean miss per instrument x band: "
          + ", ".join(f"{i} {b} {m:+.4f} (+- {e:.4f}, {n})" for (i, b), (m, e, n) in bias.items()))
    for (inst, band), (mean, e, _) in bias.items():
        assert abs(mean) < min(3 * e, 0.035) and e < 0.02, (seed, inst, band, mean, e)
    relative = np.abs(d - np.array([bias[(i, b)][0] for i, b, *_ in rows]))
    assert np.sum(relative > 0.02) <= 0.02 * len(d), (seed, np.sort(relative)[-5:])
