"""TTV inference (tasks/ttv.py, tasks/ttv_model.py) against the demo survey's TTVFast truth.

The transit times are the demo's own N-body times (truth.json) at its observed epochs plus Gaussian noise of
1-2 minutes, the timing errors the demo's transit fits reach; the default fits use narrow-ish priors and few
live points so they take seconds, the slow test uses wide priors, more live points and a pool of 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.table import Table

from openastro_parsl.pipeline.task import NoWorkFound
from openastro_parsl.tasks.lightcurve import ttv_model as tm
from openastro_parsl.tasks.lightcurve.ttv import (CHECKPOINT_NAME, TtvFitConfig, TtvFitTask, build_priors,
                                                  load_posterior, narrow_priors)

QUICK = dict(mass_range=[1e-5, 1e-3], period_ratio_range=[1.9, 2.2], eccentricity_range=[0.0, 0.1],
             known_mass_msun=5.7e-4, nlive=100, n_cores=1, seed=42)


def transit_table(truth: dict, seed: int = 1, err_s=(60.0, 120.0), epochs=None) -> Table:
    """A transitTimes table (docs/datasets.md) from the demo's TTVFast times plus Gaussian noise."""
    p = truth["planet"]
    ep, tt = np.array(p["epochs"]), np.array(p["transit_times"])
    sel = np.isin(ep, p["observed_epochs"] if epochs is None else epochs)
    rng = np.random.default_rng(seed)
    err = rng.uniform(*err_s, sel.sum()) / 86400.0
    t_obs = tt[sel] + rng.normal(0.0, err)
    t0, period, _ = tm.fit_linear_ephemeris(ep[sel], t_obs, err)
    t_pred = t0 + period * ep[sel]
    table = Table({"epoch": ep[sel], "t_obs": t_obs, "t_obs_err": err, "t_pred": t_pred,
                   "oc": t_obs - t_pred, "oc_err": err})
    table.meta.update(period=period, period_err=1e-4, t0=t0, t0_err=1e-3, time_system="MJD_TDB")
    return table


def truth_perturber(truth: dict) -> dict:
    return truth["planet"]["ttvfast"]["planets"][1]


def inside(interval: dict, value: float, level: str = "95") -> bool:
    return interval[f"lo{level}"] <= value <= interval[f"hi{level}"]


@pytest.fixture(scope="module")
def times(demo):
    return transit_table(demo.truth)


@pytest.fixture(scope="module")
def quick_fit(times):
    return TtvFitTask(TtvFitConfig(**QUICK)).run(times, data_id={"target": "OA-T1"})


def test_connections_and_resources():
    conns = TtvFitTask.connections()
    assert {n: (c.dataset_type, c.dimensions, c.storage_class, c.kind) for n, c in conns.items()} == {
        "transit_times": ("transitTimes", ("target",), "Table", "input"),
        "posterior": ("ttvPosterior", ("target",), "Table", "output"),
        "summary": ("ttvSummary", ("target",), "StructuredData", "output"),
        "corner": ("ttvCorner", ("target",), "Plot", "output")}
    assert TtvFitTask.dimensions == ("target",)
    assert TtvFitTask.resources.resource_class == "mcmc"
    assert TtvFitTask.resources_for(TtvFitConfig(n_cores=8)).cores == 8


def test_forward_model_reproduces_the_simulated_transits(demo):
    """TTVFast with the truth perturber, b on the fitted ephemeris, reproduces the demo's N-body transit
    times to seconds after the profiled linear shift; without the perturber they are minutes off."""
    truth = demo.truth
    p = truth["planet"]
    table = Table({"epoch": p["epochs"], "t_obs": p["transit_times"], "t_obs_err": np.full(len(p["epochs"]), 1 / 1440)})
    data = tm.TransitData.from_table(table)
    c, b = truth_perturber(truth), p["ttvfast"]["planets"][0]
    start = data.t_ref - 0.5 * data.period
    lam = (c["argument"] + c["mean_anomaly"] + 360.0 * (start - p["ttvfast"]["t0"]) / c["period"]) % 360.0
    priors = tuple(tm.make_prior(n, v) for n, v in [("mass", c["mass"]), ("period", c["period"]),
                                                     ("eccentricity", 0.0), ("omega", c["argument"]),
                                                     ("mean_longitude", lam), ("known_mass", b["mass"])])
    model = tm.TtvModel(data, priors, p["stellar_mass_msun"])
    chi2, dt0, dp = model.profile(model.transit_times(model.params([])))
    rms_s = np.sqrt(chi2 / data.n) * 60.0  # errors are 1 minute
    assert rms_s < 15.0
    # The profiled shifts are small: b's model orbit sits on the fitted ephemeris to within a few minutes and
    # ~1e-3 d per epoch (osculating elements differ from mean ones by ~m/M* of the period).
    assert abs(dt0) * 1440 < 10 and abs(dp) < 3e-3
    _, _, chi2_null = tm.fit_linear_ephemeris(data.rel_epochs, data.times, data.errors)
    assert np.sqrt(chi2_null / data.n) > 3.0  # the TTV signal is minutes, not seconds


def test_priors_and_stability_cut():
    pr = tm.make_prior("mass", [1e-6, 1e-2])
    assert pr.kind == "log" and pr.transform(0.5) == pytest.approx(1e-4)
    assert tm.make_prior("omega", [0, 360]).periodic and not tm.make_prior("omega", [0, 180]).periodic
    assert tm.make_prior("eccentricity", 0.0).fixed
    with pytest.raises(ValueError, match="positive"):
        tm.make_prior("mass", [0.0, 1e-3])
    # The demo pair (period ratio 2.03) is ~7 mutual Hill radii apart; a 1.05 ratio is not stable.
    assert tm.hill_separation(1.0, 5.7e-4, 2.8, 0.0, 2e-4, 5.684, 0.0) == pytest.approx(7.2, abs=0.3)
    assert tm.hill_separation(1.0, 5.7e-4, 2.8, 0.0, 2e-4, 2.94, 0.0) < 2 * np.sqrt(3)
    cfg = TtvFitConfig(period_ratio_range=[1.3, 4.0], eccentricity_range=[0, 0])
    got = {p.name: p for p in build_priors(cfg, 2.8)}
    assert got["period"].lo == pytest.approx(3.64) and got["period"].hi == pytest.approx(11.2)
    assert got["eccentricity"].fixed and got["omega"].fixed and got["known_mass"].fixed
    with pytest.raises(ValueError):
        TtvFitConfig(eccentricity_range=[0, 1.0])
    with pytest.raises(ValueError):
        TtvFitConfig(mass_range=[1e-3, 1e-5])


def test_bad_input_is_named_and_short_series_is_no_work(times):
    task = TtvFitTask(TtvFitConfig(**QUICK))
    with pytest.raises(NoWorkFound, match="OA-T9.*min_transits=5"):
        task.run(times[:4], data_id={"target": "OA-T9"})
    with pytest.raises(ValueError, match="OA-T9.*t_obs_err"):
        task.run(times[["epoch", "t_obs"]], data_id={"target": "OA-T9"})
    minutes = times.copy()
    minutes["t_obs_err"] = minutes["t_obs_err"] * 1440.0 * 60  # seconds mistaken for days
    with pytest.raises(ValueError, match="are the errors in days"):
        task.run(minutes, data_id={"target": "OA-T9"})


def test_demo_posterior_contains_the_truth(demo, times, quick_fit):
    """The default end-to-end fit: 6 demo transits with 1-2 min errors, 5 free perturber parameters."""
    c = truth_perturber(demo.truth)
    s = quick_fit["summary"]
    ci = s["credible_intervals"]
    assert inside(ci["period"], c["period"]) and inside(ci["mass"], c["mass"])
    assert ci["mass"]["lo95"] > 1e-5 * 1.5  # a mass detection, not just the prior's floor
    assert ci["period"]["hi95"] - ci["period"]["lo95"] < 0.8  # narrower than the 1.9-2.2 ratio prior (0.84 d)
    # Perturber strongly preferred over a linear ephemeris; evidence finite with an error.
    assert s["ln_bayes_factor_vs_linear"] > 3
    assert np.isfinite(s["log_evidence"]) and 0 < s["log_evidence_err"] < 1
    assert s["n_transits"] == 6 and s["free_parameters"] == ["mass", "period", "eccentricity", "omega",
                                                              "mean_longitude"]
    json.dumps(s)  # StructuredData must be JSON-able

    post = quick_fit["posterior"]
    assert np.isclose(np.sum(post["weight"]), 1.0) and np.all(post["weight"] >= 0)
    assert post.meta["log_evidence"] == s["log_evidence"] and str(post["mass"].unit) == "solMass"
    # The maximum-likelihood sample is a real draw: the model gives it exactly the recorded likelihood.
    ml = s["max_likelihood"]
    assert ml["logl"] == pytest.approx(float(np.max(post["logl"])))
    cfg = TtvFitConfig(**QUICK)
    data = tm.TransitData.from_table(times)
    model = tm.TtvModel(data, build_priors(cfg, data.period), cfg.stellar_mass_msun)
    logl, blob = model.loglike([ml[n] for n in model.free])
    assert logl == pytest.approx(ml["logl"], abs=1e-6)
    assert data.t_ref + blob[0] == pytest.approx(ml["known_t0"], abs=1e-9)
    assert ml["chi2"] < 6.0  # 6 transits
    # Corner plot: one row and column per free parameter.
    fig = quick_fit["corner"]
    assert len(fig.axes) == 25

    # The outputs go through the datastore as their dataset types' storage classes.
    from openastro_parsl.registry.refs import DatasetType

    data_id = {"target": "OA-T1"}
    for name, conn in TtvFitTask.connections().items():
        if conn.kind == "output":
            demo.butler.put(quick_fit[name], DatasetType(conn.dataset_type, conn.dimensions, conn.storage_class),
                            data_id, run="test_ttv/outputs")
    back = demo.butler.get("ttvPosterior", data_id, collections="test_ttv/outputs")
    assert len(back) == len(post) and back.meta["free_parameters"] == s["free_parameters"]
    assert demo.butler.get("ttvSummary", data_id, collections="test_ttv/outputs") == s
    assert demo.butler.get("ttvCorner", data_id, collections="test_ttv/outputs")[:4] == b"\x89PNG"


@pytest.mark.filterwarnings("ignore:The sampling was stopped short")
def test_killed_run_resumes_from_its_checkpoint(tmp_path, times, quick_fit):
    """SIGKILL a process running the fit once it has checkpointed; the rerun resumes (its call count goes on
    from the checkpoint's) and ends exactly where the uninterrupted run ended."""
    times.write(tmp_path / "times.parq", format="parquet")
    ckdir = tmp_path / "ckpt"
    cfg = dict(QUICK, checkpoint_every_s=0.5)
    code = ("import json, sys; from astropy.table import Table; from openastro_parsl.tasks.lightcurve.ttv import TtvFitConfig, TtvFitTask; "
            "TtvFitTask(TtvFitConfig(**json.loads(sys.argv[1]))).run(Table.read(sys.argv[2]), "
            "checkpoint_dir=sys.argv[3], data_id={'target': 'OA-T1'})")
    errlog = open(tmp_path / "child.stderr", "wb")
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(cfg), str(tmp_path / "times.parq"), str(ckdir)],
                            stdout=subprocess.DEVNULL, stderr=errlog)
    ck, seen, t0 = ckdir / CHECKPOINT_NAME, set(), time.time()
    try:
        while len(seen) < 2 and proc.poll() is None and time.time() - t0 < 120:
            if ck.exists():
                seen.add(ck.stat().st_mtime_ns)
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        errlog.close()
    err = (tmp_path / "child.stderr").read_text(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"fit ended before it was killed: {err[-2000:]}"

    out = TtvFitTask(TtvFitConfig(**cfg)).run(Table.read(tmp_path / "times.parq"), checkpoint_dir=str(ckdir),
                                             data_id={"target": "OA-T1"})
    sam, ref = out["summary"]["sampler"], quick_fit["summary"]["sampler"]
    assert sam["resumed"] and 0 < sam["ncall_at_resume"] < sam["ncall"]
    assert sam["iterations_at_resume"] > 0
    # Same seed, same state: the resumed run is the uninterrupted run, call for call.
    assert sam["ncall"] == ref["ncall"]
    assert out["summary"]["log_evidence"] == pytest.approx(quick_fit["summary"]["log_evidence"], rel=1e-12)
    # A finished checkpoint is reused without a single new likelihood call.
    again = TtvFitTask(TtvFitConfig(**cfg)).run(times, checkpoint_dir=str(ckdir), data_id={"target": "OA-T1"})
    assert again["summary"]["sampler"]["ncall"] == again["summary"]["sampler"]["ncall_at_resume"] == sam["ncall"]
    # Other data never resume a stale checkpoint.
    other = transit_table_like(times, shift_s=30.0)
    fresh = TtvFitTask(TtvFitConfig(**dict(cfg, nlive=30, maxcall=300))).run(other, checkpoint_dir=str(ckdir))
    assert not fresh["summary"]["sampler"]["resumed"]


def transit_table_like(table: Table, shift_s: float) -> Table:
    out = table.copy()
    out["t_obs"][0] += shift_s / 86400.0
    return out


def test_warm_start_narrows_priors_around_the_previous_posterior(demo, tmp_path, times, quick_fit):
    c = truth_perturber(demo.truth)
    post = quick_fit["posterior"]
    post.write(tmp_path / "prev.parq", format="parquet")
    np.savez(tmp_path / "prev.npz", **{n: np.asarray(post[n]) for n in post.colnames})
    cols_p, w_p = load_posterior(tmp_path / "prev.parq")
    cols_n, w_n = load_posterior(tmp_path / "prev.npz")
    assert np.allclose(w_p, w_n) and np.allclose(cols_p["mass"], cols_n["mass"])
    cfg = TtvFitConfig(**QUICK)
    old = {p.name: p for p in build_priors(cfg, 2.7993)}
    # With the defaults (99.7% kept, padded by half its width) six transits barely narrow these priors;
    # keeping the central 95% padded by 10% does.
    assert narrow_priors(tuple(old.values()), cols_p, w_p, 0.997, 0.5)[1].keys() <= {"mass", "period", "eccentricity"}
    priors, changed = narrow_priors(tuple(old.values()), cols_p, w_p, 0.95, 0.1)
    new = {p.name: p for p in priors}
    assert {"mass", "period"} <= set(changed) and "omega" not in changed and "mean_longitude" not in changed
    assert new["period"].hi - new["period"].lo < 0.9 * (old["period"].hi - old["period"].lo)
    assert np.log(new["mass"].hi / new["mass"].lo) < 0.9 * np.log(old["mass"].hi / old["mass"].lo)
    assert new["period"].lo < c["period"] < new["period"].hi and new["mass"].lo < c["mass"] < new["mass"].hi

    # The interval arithmetic on a known posterior: equal-weight log-uniform samples over 1e-4..4e-4 Msun,
    # the central 90% padded by 10% of its log width each side.
    x = np.exp(np.linspace(np.log(1e-4), np.log(4e-4), 20001))
    (m,), ch = narrow_priors((old["mass"],), {"mass": x}, np.full(x.size, 1 / x.size), 0.9, 0.1)
    lw = 0.9 * np.log(4.0)
    assert np.log(m.lo) == pytest.approx(np.log(1e-4) + 0.05 * np.log(4.0) - 0.1 * lw, abs=1e-3)
    assert np.log(m.hi) == pytest.approx(np.log(4e-4) - 0.05 * np.log(4.0) + 0.1 * lw, abs=1e-3)
    assert ch["mass"][0] == [1e-5, 1e-3]

    warm = TtvFitTask(TtvFitConfig(**dict(QUICK, nlive=60, warm_start=str(tmp_path / "prev.parq"),
                                          warm_start_mass=0.95, warm_start_pad=0.1))).run(
        times, data_id={"target": "OA-T1"})
    s = warm["summary"]
    assert s["warm_start"]["path"].endswith("prev.parq") and {"mass", "period"} <= set(s["warm_start"]["narrowed"])
    assert s["priors"]["period"]["lo"] == pytest.approx(new["period"].lo, rel=1e-4)
    assert inside(s["credible_intervals"]["period"], c["period"]) and inside(s["credible_intervals"]["mass"], c["mass"])
    with pytest.raises(FileNotFoundError, match="warm_start"):
        TtvFitTask(TtvFitConfig(**dict(QUICK, warm_start=str(tmp_path / "nope.parq")))).run(times)


@pytest.mark.slow
def test_full_inference_wide_priors_pool_of_two(demo):
    """Wide priors (mass 1e-6..1e-2 Msun, period ratio 1.5..3 with the 3:2, 2:1 and 5:2 aliases, e < 0.2),
    the default known-planet mass (not the truth), 400 live points, 2 worker processes."""
    c = truth_perturber(demo.truth)
    times = transit_table(demo.truth, seed=7)
    cfg = TtvFitConfig(mass_range=[1e-6, 1e-2], period_ratio_range=[1.5, 3.0], eccentricity_range=[0.0, 0.2],
                       nlive=400, n_cores=2, seed=3)
    s = TtvFitTask(cfg).run(times, data_id={"target": "OA-T1"})["summary"]
    ci = s["credible_intervals"]
    assert inside(ci["period"], c["period"]) and inside(ci["mass"], c["mass"])
    assert ci["mass"]["lo95"] > 1e-6 * 3
    assert s["ln_bayes_factor_vs_linear"] > 3
    assert s["sampler"]["cores"] == 2 and s["sampler"]["ncall"] > 20000
