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
(the same fit on perfect photometry): ``benchmarks/zeropoint_limit.py`` and docs/zeropoints.md.

With the cameras' colour terms measured on the survey's own standard field (``openastro-demo --standard-field``:
the standard field calibrated alone, its colour terms pooled as ``openastro-butler colour-terms`` pools them, and
given to ``fieldCalibration`` as known, as ``bin/demo`` does; no truth involved), the catalogue's colour error is
gone and the flat criterion is asserted: at most 2 % of each sky's frames beyond 0.02 mag of the truth. That
second fit runs ``fieldCalibration`` on the same ``src`` tables."""

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
STANDARDS = "u/test/standards"


_SURVEYS: dict[int, object] = {}


def _calibrated(seed, tmp_path_factory):
    """The seed's survey, calibrated once for both tests."""
    if seed not in _SURVEYS:
        _SURVEYS[seed] = _calibrate_survey(tmp_path_factory.mktemp("zp"), seed)
    return _SURVEYS[seed]


def _calibrate_survey(root, seed):
    from openastro_parsl.demo import make_demo_repo

    demo = make_demo_repo(root / f"seed{seed}", seed=seed, size="small", standard_field=True)
    pipeline = load_pipeline(f"{ROOT / 'pipelines' / 'image.yaml'}#calibration")
    site, src = load_site(None)
    for run, where in ((STANDARDS, "field = 'std1'"), (RUN, "field != 'std1'")):
        graph = Planner(demo.butler, pipeline, inputs=["demo/defaults"], output_run=run, where=where).plan()
        summary = Submission.start(demo.butler, graph, site, src).run()
        assert summary.ok, f"seed {seed}: the calibration run {run} failed"
    return demo


def _misses(demo):
    """Per exposure: (instrument, band, zp_pooled - truth, zp_pooled_err)."""
    truth = {(e["instrument"], e["exposure"]): e["zero_point"] for e in demo.truth["exposures"]
             if e["purpose"] != "standard"}
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
    demo = _calibrated(seed, tmp_path_factory)
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


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_zero_points_hold_on_every_sky_with_the_standard_fields_colour_terms(seed, tmp_path_factory):
    from openastro_parsl.sim.instruments import make_instruments
    from openastro_parsl.tasks.photometry import FieldCalibrationTask
    from openastro_parsl.tasks.photometry.colour_terms import pool_colour_terms
    from openastro_parsl.testing import run_task

    demo = _calibrated(seed, tmp_path_factory)
    butler = demo.butler
    pooled, _ = pool_colour_terms(butler.get(ref) for ref in butler.registry.query_datasets("fieldZeropoints",
                                                                                             [STANDARDS]))
    known = {p.key: [p.value, p.error] for p in pooled}
    true_ct = {f"{name}/{band}": ct for name, inst in make_instruments("small").items()
               for band, ct in inst.colour_terms.items()}
    assert sorted(known) == sorted(true_ct)
    for key, (value, error) in known.items():  # measured, not given: each within 4 sigma and 0.01 of the truth
        assert error < 0.006 and abs(value - true_ct[key]) < min(4 * error, 0.01), (seed, key, value, error)
    refs = butler.registry.query_datasets("src", [RUN])
    srcs = [butler.get(ref) for ref in refs]
    (field,) = {ref.data_id["field"] for ref in butler.registry.query_datasets("fieldZeropoints", [RUN])}
    refcat = butler.get("refcat", {"field": field}, collections=demo.truth.get("refcat_run", "refcats"))
    out = run_task(FieldCalibrationTask, config={"colour_terms": known, "colour_terms_index": "g-r"}, src=srcs,
                   refcat=refcat, data_ids={"src": [dict(ref.data_id) for ref in refs]},
                   data_id={"field": field})["zeropoints"]
    truth = {(e["instrument"], e["exposure"]): e["zero_point"] for e in demo.truth["exposures"]
             if e["purpose"] != "standard"}
    d = np.array([float(r["zp"]) - truth[(str(r["instrument"]), int(r["exposure"]))] for r in out])
    assert len(d) == len(truth) and sorted(out.meta["colour_terms_known"]) == sorted(known)
    print(f"\nseed {seed}, the standard field's colour terms: {int(np.sum(np.abs(d) > 0.02))} of {len(d)} frames "
          f"beyond 0.02 mag, max {np.abs(d).max():.4f}, median {np.median(np.abs(d)):.4f}")
    assert np.sum(np.abs(d) > 0.02) <= 0.02 * len(d), (seed, np.sort(np.abs(d))[-5:])
