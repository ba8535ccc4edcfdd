"""TTV inference (tasks/lightcurve/ttv*.py) against the demo survey's TTVFast truth.

The transit times are the demo's own N-body times (truth.json) at its observed epochs plus Gaussian noise of
1-2 minutes, the timing errors the demo's transit fits reach. The demo's b transits; its perturber c does
not, so the fit is b (free mass, period, t0) plus one perturber. The quick fits hold both orbits circular
(the demo's are) and use few live points so they take seconds; joint multi-planet fits are in
test_ttv_joint.py, the real system in test_ttv_k2_24.py.
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
from openastro_parsl.tasks.lightcurve.ttv import CHECKPOINT_NAME, TtvFitConfig, TtvFitTask, build_model
from openastro_parsl.tasks.lightcurve.ttv_priors import M_EARTH_MSUN, Prior
from openastro_parsl.tasks.lightcurve.ttv_sampling import load_posterior, narrow_priors

CIRCULAR = dict(eccentricity_max=0.0, mass_prior="log")
QUICK = dict(planet_defaults=dict(CIRCULAR, mass_earth=[3.0, 3000.0], period_window=0.003, t0_window_days=0.02),
             perturbers=[dict(name="c", period_ratio=[1.9, 2.2], mass_earth=[3.0, 300.0])],
             compare_without_perturbers=False, nlive=100, n_runs=1, n_cores=1, seed=42, n_oc_draws=10)
IDS = {"transit_times": [{"target": "OA-T1"}]}


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
    return TtvFitTask(TtvFitConfig(**QUICK)).run([times], data_id={"field": "F1"}, data_ids=IDS)


def test_connections_and_resources():
    conns = TtvFitTask.connections()
    assert {n: (c.dataset_type, c.dimensions, c.storage_class, c.kind, c.multiple) for n, c in conns.items()} == {
        "transit_times": ("transitTimes", ("target",), "Table", "input", True),
        "posterior": ("ttvPosterior", ("field",), "Table", "output", False),
        "summary": ("ttvSummary", ("field",), "StructuredData", "output", False),
        "corner": ("ttvCorner", ("field",), "Plot", "output", False),
        "oc": ("ttvOC", ("field",), "Plot", "output", False)}
    assert TtvFitTask.dimensions == ("field",)
    assert TtvFitTask.resources.resource_class == "mcmc"
    assert TtvFitTask.resources_for(TtvFitConfig(n_cores=8)).cores == 8
    assert TtvFitTask.resources_for(TtvFitConfig()).cores == 2


def test_pool_size_follows_the_workers_cores(monkeypatch):
    """Unset n_cores: the worker's CPUs shared among Parsl's workers on the node (SLURM mcmc: cores_per_worker)."""
    from openastro_parsl.tasks.lightcurve.ttv_sampling import available_cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    monkeypatch.setenv("PARSL_WORKER_COUNT", "2")
    assert available_cores() == 16
    monkeypatch.delenv("PARSL_WORKER_COUNT")
    assert available_cores() == 32
    monkeypatch.setenv("PARSL_WORKER_COUNT", "64")
    assert available_cores() == 1


def test_forward_model_reproduces_the_simulated_transits(demo):
    """TTVFast through SystemModel, started at the simulator's epoch with the truth's elements, gives the
    demo's N-body transit times to well under a second; without the perturber they are minutes off."""
    truth = demo.truth
    p, tv = truth["planet"], truth["planet"]["ttvfast"]
    table = Table({"epoch": p["epochs"], "t_obs": p["transit_times"], "t_obs_err": np.full(len(p["epochs"]), 1 / 1440)})
    data = tm.TransitData.from_table(table, name="b")
    b, c = tv["planets"]
    # b's t0 window must hold its first transit; the truth's elements are osculating at tv["t0"]
    values = {"b:mass": b["mass"] / M_EARTH_MSUN, "b:period": b["period"], "b:eccentricity": 0.0, "b:omega": 90.0,
              "c:mass": c["mass"] / M_EARTH_MSUN, "c:period": c["period"], "c:eccentricity": 0.0, "c:omega": 90.0,
              "c:mean_longitude": (c["argument"] + c["mean_anomaly"]) % 360.0}
    # b's mean anomaly at tv["t0"] -> the time of its conjunction nearest the first observed transit
    m_conj = tm.mean_anomaly_at_conjunction(0.0, 90.0)
    first = tv["t0"] + ((m_conj - b["mean_anomaly"]) % 360.0) / 360.0 * b["period"]
    first += b["period"] * np.round((data.times[0] - first) / b["period"])
    values["b:t0"] = first
    priors = tuple(Prior(n, v, v) for n, v in values.items())
    model = tm.SystemModel((data,), ("c",), priors, p["stellar_mass_msun"],
                           inclinations={"b": b["inclination"], "c": c["inclination"]})
    model.t_start = tv["t0"]  # the simulator's epoch of osculation (the model's own is the earliest window edge)
    model.timestep_fraction = tv["dt"] / b["period"]
    got = model.transit_times(model.params([]))[0]
    assert np.max(np.abs(got - data.times)) * 86400 < 0.5
    _, _, chi2_null = tm.fit_linear_ephemeris(data.epochs, data.times, data.errors)
    assert np.sqrt(chi2_null / data.n) > 3.0  # the TTV signal is minutes, not seconds
    # halving a 1/10-period step moves these times more than halving a 1/40 one
    coarse = tm.SystemModel((data,), ("c",), priors, 1.0, timestep_fraction=0.1).step_check([])
    fine = tm.SystemModel((data,), ("c",), priors, 1.0, timestep_fraction=0.025).step_check([])
    assert fine["max_shift_minutes"] < coarse["max_shift_minutes"]
    assert coarse["timestep_days"] == pytest.approx(0.1 * b["period"])


def test_step_is_a_fraction_of_the_shortest_period():
    """An interior perturber sets the step (the issue's case: the transiting planet's period gave a step
    too long for the inner body)."""
    d = tm.TransitData("b", np.arange(6), 100.0 + 10.0 * np.arange(6), np.full(6, 1e-3), 100.0, 10.0)
    fixed = {"b:mass": 10.0, "b:period": 10.0, "b:t0": 100.0, "b:eccentricity": 0.0, "b:omega": 90.0,
             "d:mass": 5.0, "d:period": 4.1, "d:mean_longitude": 0.0, "d:eccentricity": 0.0, "d:omega": 90.0}
    model = tm.SystemModel((d,), ("d",), tuple(Prior(n, v, v) for n, v in fixed.items()), 1.0)
    assert model.timestep(model.params([])) == pytest.approx(0.05 * 4.1)


def test_prior_transforms():
    assert Prior("m", 1.0, 100.0, "log").transform(0.5) == pytest.approx(10.0)
    assert Prior("e", 0.0, 0.25, "sqrt_uniform").transform(0.5) == pytest.approx(0.0625)
    # Rayleigh: untruncated median sigma*sqrt(2 ln 2); truncated at e_max the transform stays inside
    ray = Prior("e", 0.0, 0.99, "rayleigh", scale=0.05)
    assert ray.transform(0.5) == pytest.approx(0.05 * np.sqrt(2 * np.log(2)), rel=1e-6)
    assert Prior("e", 0.0, 0.1, "rayleigh", scale=0.2).transform(1.0) == pytest.approx(0.1)
    u = np.random.default_rng(0).random(20000)
    e = np.array([ray.transform(x) for x in u])
    assert np.mean(e) == pytest.approx(0.05 * np.sqrt(np.pi / 2), rel=0.02)
    with pytest.raises(ValueError, match="log-uniform"):
        Prior("m", 0.0, 1.0, "log")
    with pytest.raises(ValueError, match="rayleigh prior needs a positive scale"):
        Prior("e", 0.0, 0.5, "rayleigh")
    # The demo pair (period ratio 2.03) is ~7 mutual Hill radii apart; a 1.05 ratio is not stable.
    assert tm.hill_separation(1.0, 5.7e-4, 2.8, 0.0, 2e-4, 5.684, 0.0) == pytest.approx(7.2, abs=0.3)
    assert tm.hill_separation(1.0, 5.7e-4, 2.8, 0.0, 2e-4, 2.94, 0.0) < 2 * np.sqrt(3)


def test_sqrt_e_normal_and_normal_mass_priors_match_their_definitions():
    """sqrt_e_normal is ttvnest's (sqrt(e) cos w, sqrt(e) sin w) ~ N(0, s) each, cut at e_max: compared with
    direct draws of that pair. A normal mass prior is truncated to its bounds."""
    rng = np.random.default_rng(1)
    s = np.sqrt(0.15)
    pair = (rng.normal(0.0, s, (2, 200000)) ** 2).sum(axis=0)
    direct = pair[pair <= 0.5]
    prior = Prior("e", 0.0, 0.5, "sqrt_e_normal", scale=s)
    e = np.array([prior.transform(x) for x in rng.random(20000)])
    assert e.max() <= 0.5 and prior.transform(1.0) == pytest.approx(0.5)
    for q in (10, 50, 90):
        assert np.percentile(e, q) == pytest.approx(np.percentile(direct, q), rel=0.04, abs=2e-3)
    m = Prior("m", 1.0, 200.0, "normal", scale=3.0, mean=17.0)
    assert m.transform(0.5) == pytest.approx(17.0, abs=1e-6)
    assert m.transform(0.841344746) == pytest.approx(20.0, rel=1e-4)
    assert Prior("m", 15.0, 200.0, "normal", scale=3.0, mean=17.0).transform(0.0) == pytest.approx(15.0)
    assert m.describe() == {"kind": "normal", "lo": 1.0, "hi": 200.0, "unit": "", "scale": 3.0, "mean": 17.0}
    with pytest.raises(ValueError, match="mass_normal"):
        TtvFitConfig(planet_defaults={"mass_prior": "normal"})
    with pytest.raises(ValueError, match="sigma > 0"):
        TtvFitConfig(planet_defaults={"mass_prior": "normal", "mass_normal": [17.0, 0.0]})


@pytest.mark.parametrize("kind, scale", [("sqrt_e_normal", np.sqrt(0.15)), ("uniform", 0.0), ("rayleigh", 0.1)])
def test_cartesian_eccentricity_is_the_polar_prior_without_its_singularity(kind, scale):
    """The Cartesian pair (kept inside its disc) gives the polar prior's e and a uniform omega; the fraction of
    draws inside the disc is exp(log_disc_fraction), the evidence offset the model adds back."""
    from scipy.stats import ks_2samp

    from openastro_parsl.tasks.lightcurve.ttv_priors import eccentricity_priors, log_disc_fraction

    rng = np.random.default_rng(3)
    e_pol, w_pol = eccentricity_priors("b", kind, scale or 0.05, 0.4, "polar")
    polar = np.array([e_pol.transform(x) for x in rng.random(3000)])
    x, y = eccentricity_priors("b", kind, scale or 0.05, 0.4, "cartesian")
    assert x.name == ("b:ecosw" if kind == "rayleigh" else "b:secosw") and not x.periodic and x.disc == x.hi
    u = rng.random((6000, 2))
    h, k = np.array([x.transform(a) for a in u[:, 0]]), np.array([y.transform(a) for a in u[:, 1]])
    inside = h**2 + k**2 <= x.disc**2
    n, frac = inside.size, np.exp(log_disc_fraction(x))
    assert abs(inside.mean() - frac) < 4 * np.sqrt(frac * (1 - frac) / n)
    r2 = (h**2 + k**2)[inside]
    e = r2 if kind != "rayleigh" else np.sqrt(r2)
    assert e.max() <= 0.4 and ks_2samp(e, polar).pvalue > 0.01
    omega = np.degrees(np.arctan2(k, h))[inside] % 360
    assert ks_2samp(omega / 360, rng.random(3000)).pvalue > 0.01
    assert w_pol.periodic and eccentricity_priors("b", kind, 0.05, 0.0, "cartesian")[0].fixed  # circular: polar
    if kind == "sqrt_e_normal":
        with pytest.raises(ValueError, match="sqrt_uniform' has no Cartesian form"):
            eccentricity_priors("b", "sqrt_uniform", 0.05, 0.4, "cartesian")


def test_config_priors_per_planet(times):
    cfg = TtvFitConfig(planets={"OA-T1": {"mass_earth": [10, 20], "eccentricity_prior": "sqrt_uniform",
                                          "eccentricity_max": 0.2}},
                       perturbers=[{"name": "x", "period": [5.0, 6.0]}])
    data = tm.TransitData.from_table(times, name="OA-T1")
    got = {p.name: p for p in build_model(cfg, [data], 1.0).priors}
    assert (got["OA-T1:mass"].lo, got["OA-T1:mass"].hi, got["OA-T1:mass"].kind) == (10.0, 20.0, "log")
    assert got["OA-T1:eccentricity"].kind == "sqrt_uniform" and got["OA-T1:eccentricity"].hi == 0.2
    assert got["OA-T1:period"].lo == pytest.approx(data.period * 0.99)
    assert (got["x:period"].lo, got["x:period"].hi) == (5.0, 6.0) and got["x:mean_longitude"].periodic
    assert got["x:eccentricity"].kind == "rayleigh" and got["x:omega"].periodic
    ref = TtvFitConfig(planets={"OA-T1": {"mass_prior": "normal", "mass_normal": [17.0, 3.0],
                                          "eccentricity_prior": "sqrt_e_normal", "eccentricity_scale": 0.39}})
    got = {p.name: p for p in build_model(ref, [data], 1.0).priors}
    assert (got["OA-T1:mass"].kind, got["OA-T1:mass"].mean, got["OA-T1:mass"].scale) == ("normal", 17.0, 3.0)
    assert (got["OA-T1:eccentricity"].kind, got["OA-T1:eccentricity"].scale) == ("sqrt_e_normal", 0.39)
    auto = {p.name: p for p in build_model(TtvFitConfig(planet_defaults={"mass_earth": [1, 10]}), [data], 1.0).priors}
    # a lone transiting planet gets one perturber; a partial planet_defaults keeps the other defaults
    assert auto["perturber:period"].lo == pytest.approx(1.3 * data.period) and auto["perturber:mass"].hi == 10.0
    with pytest.raises(ValueError, match="no transit times for them"):
        build_model(TtvFitConfig(planets={"OA-T9": {}}), [data], 1.0)
    with pytest.raises(ValueError, match="eccentricity_max"):
        TtvFitConfig(planet_defaults={"eccentricity_max": 1.0})
    with pytest.raises(ValueError, match="mass_earth"):
        TtvFitConfig(planet_defaults={"mass_earth": [30, 3]})


def test_bad_input_is_named_and_short_series_is_no_work(times):
    task = TtvFitTask(TtvFitConfig(**QUICK, min_transits=5))
    with pytest.raises(NoWorkFound, match="F9.*min_transits=5"):
        task.run([times[:4]], data_id={"field": "F9"}, data_ids=IDS)
    with pytest.raises(ValueError, match="OA-T1.*t_obs_err"):
        task.run([times[["epoch", "t_obs"]]], data_id={"field": "F9"}, data_ids=IDS)
    minutes = times.copy()
    minutes["t_obs_err"] = minutes["t_obs_err"] * 1440.0 * 60  # seconds mistaken for days
    with pytest.raises(ValueError, match="OA-T1.*are the errors in days"):
        task.run([minutes], data_id={"field": "F9"}, data_ids=IDS)
    bad = times.copy()
    bad["t_obs_err"][2] = 0.0
    with pytest.raises(ValueError, match=r"target OA-T1: non-positive t_obs_err in row\(s\) \[2\]"):
        task.run([bad], data_id={"field": "F9"}, data_ids=IDS)


def test_demo_posterior_contains_the_truth(demo, times, quick_fit):
    """The default end-to-end fit: 6 demo transits with 1-2 min errors; b and the perturber c."""
    c = truth_perturber(demo.truth)
    s = quick_fit["summary"]
    pc = s["planets"]["c"]
    assert not pc["transiting"] and s["planets"]["OA-T1"]["transiting"]
    assert inside(pc["period_days"], c["period"]) and inside(pc["mass_earth"], c["mass"] / M_EARTH_MSUN)
    assert pc["mass_earth"]["lo95"] > 3.0 * 1.5  # a mass detection, not just the prior's floor
    assert pc["mass_ratio"]["median"] == pytest.approx(pc["mass_earth"]["median"] * M_EARTH_MSUN, rel=1e-6)
    assert np.isfinite(s["log_evidence"]) and 0 < s["log_evidence_err"] < 1
    assert s["n_likelihood_calls"] == s["sampler"]["ncall"] > 1000
    assert s["n_transits"] == {"OA-T1": 6} and s["stellar_mass_msun"] == 1.0
    assert s["free_parameters"] == ["OA-T1:mass", "OA-T1:period", "OA-T1:t0", "c:mass", "c:period",
                                    "c:mean_longitude"]
    assert s["timestep_check"]["max_shift_sigma"] < 0.1
    assert any("stellar mass 1.0 Msun is the default" in w for w in s["warnings"])
    json.dumps(s)  # StructuredData must be JSON-able

    post = quick_fit["posterior"]
    assert np.isclose(np.sum(post["weight"]), 1.0) and np.all(post["weight"] >= 0)
    assert post.meta["log_evidence"] == s["log_evidence"]
    # The maximum-likelihood sample is a real draw: the model gives it exactly the recorded likelihood.
    ml = s["max_likelihood"]
    assert ml["logl"] == pytest.approx(float(np.max(post["logl"])))
    data = tm.TransitData.from_table(times, name="OA-T1")
    model = build_model(TtvFitConfig(**QUICK), [data], 1.0)
    assert model.loglike([ml[n] for n in model.free]) == pytest.approx(ml["logl"], abs=1e-6)
    assert ml["chi2"] < 6.0 * 2.5  # 6 transits
    assert len(quick_fit["corner"].axes) == 36  # one row and column per free parameter
    assert len(quick_fit["oc"].axes) == 1  # one O-C panel per transiting planet

    # The outputs go through the datastore as their dataset types' storage classes.
    from openastro_parsl.registry.refs import DatasetType

    data_id = {"field": demo.butler.registry.dimension_records("field")[0]["name"]}
    for name, conn in TtvFitTask.connections().items():
        if conn.kind == "output":
            demo.butler.put(quick_fit[name], DatasetType(conn.dataset_type, conn.dimensions, conn.storage_class),
                            data_id, run="test_ttv/outputs")
    back = demo.butler.get("ttvPosterior", data_id, collections="test_ttv/outputs")
    assert len(back) == len(post) and back.meta["free_parameters"] == s["free_parameters"]
    assert demo.butler.get("ttvSummary", data_id, collections="test_ttv/outputs") == s
    assert demo.butler.get("ttvOC", data_id, collections="test_ttv/outputs")[:4] == b"\x89PNG"


@pytest.mark.filterwarnings("ignore:The sampling was stopped short")
def test_killed_run_resumes_from_its_checkpoint(tmp_path, times, quick_fit):
    """SIGKILL a process running the fit once it has checkpointed; the rerun resumes (its call count goes on
    from the checkpoint's) and ends exactly where the uninterrupted run ended."""
    times.write(tmp_path / "times.parq", format="parquet")
    ckdir = tmp_path / "ckpt"
    cfg = dict(QUICK, checkpoint_every_s=0.5)
    code = ("import json, sys; from astropy.table import Table; from openastro_parsl.tasks.lightcurve.ttv import "
            "TtvFitConfig, TtvFitTask; TtvFitTask(TtvFitConfig(**json.loads(sys.argv[1]))).run("
            "[Table.read(sys.argv[2])], checkpoint_dir=sys.argv[3], data_id={'field': 'F1'}, "
            "data_ids={'transit_times': [{'target': 'OA-T1'}]})")
    errlog = open(tmp_path / "child.stderr", "wb")
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(cfg), str(tmp_path / "times.parq"), str(ckdir)],
                            stdout=subprocess.DEVNULL, stderr=errlog)
    ck, seen, t0 = ckdir / CHECKPOINT_NAME, set(), time.time()
    try:
        while len(seen) < 2 and proc.poll() is None and time.time() - t0 < 180:
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

    out = TtvFitTask(TtvFitConfig(**cfg)).run([Table.read(tmp_path / "times.parq")], checkpoint_dir=str(ckdir),
                                             data_id={"field": "F1"}, data_ids=IDS)
    sam, ref = out["summary"]["sampler"], quick_fit["summary"]["sampler"]
    assert sam["resumed"] and 0 < sam["ncall_at_resume"] < sam["ncall"]
    assert sam["iterations_at_resume"] > 0
    # Same seed, same state: the resumed run is the uninterrupted run, call for call.
    assert sam["ncall"] == ref["ncall"]
    assert out["summary"]["log_evidence"] == pytest.approx(quick_fit["summary"]["log_evidence"], rel=1e-12)
    # A finished checkpoint is reused without a single new likelihood call.
    again = TtvFitTask(TtvFitConfig(**cfg)).run([times], checkpoint_dir=str(ckdir), data_id={"field": "F1"},
                                               data_ids=IDS)
    assert again["summary"]["sampler"]["ncall"] == again["summary"]["sampler"]["ncall_at_resume"] == sam["ncall"]
    # Other data never resume a stale checkpoint.
    other = times.copy()
    other["t_obs"][0] += 30.0 / 86400.0
    fresh = TtvFitTask(TtvFitConfig(**dict(cfg, nlive=30, maxcall=300))).run(
        [other], checkpoint_dir=str(ckdir), data_ids=IDS)
    assert not fresh["summary"]["sampler"]["resumed"]


def test_warm_start_narrows_priors_around_the_previous_posterior(demo, tmp_path, times, quick_fit):
    c = truth_perturber(demo.truth)
    post = quick_fit["posterior"]
    post.write(tmp_path / "prev.parq", format="parquet")
    np.savez(tmp_path / "prev.npz", **{n: np.asarray(post[n]) for n in post.colnames})
    cols_p, w_p = load_posterior(tmp_path / "prev.parq")
    cols_n, w_n = load_posterior(tmp_path / "prev.npz")
    assert np.allclose(w_p, w_n) and np.allclose(cols_p["c:mass"], cols_n["c:mass"])
    data = tm.TransitData.from_table(times, name="OA-T1")
    old = {p.name: p for p in build_model(TtvFitConfig(**QUICK), [data], 1.0).priors}
    priors, changed = narrow_priors(tuple(old.values()), cols_p, w_p, 0.95, 0.1)
    new = {p.name: p for p in priors}
    assert {"c:mass", "c:period"} <= set(changed) and "c:mean_longitude" not in changed
    assert new["c:period"].hi - new["c:period"].lo < 0.9 * (old["c:period"].hi - old["c:period"].lo)
    assert new["c:period"].lo < c["period"] < new["c:period"].hi

    # The interval arithmetic on a known posterior: equal-weight log-uniform samples over 10..40 Earth
    # masses, the central 90% padded by 10% of its log width each side.
    x = np.exp(np.linspace(np.log(10.0), np.log(40.0), 20001))
    (m,), ch = narrow_priors((old["c:mass"],), {"c:mass": x}, np.full(x.size, 1 / x.size), 0.9, 0.1)
    lw = 0.9 * np.log(4.0)
    assert np.log(m.lo) == pytest.approx(np.log(10.0) + 0.05 * np.log(4.0) - 0.1 * lw, abs=1e-3)
    assert np.log(m.hi) == pytest.approx(np.log(40.0) - 0.05 * np.log(4.0) + 0.1 * lw, abs=1e-3)
    assert ch["c:mass"][0] == [3.0, 300.0]

    warm = TtvFitTask(TtvFitConfig(**dict(QUICK, nlive=60, warm_start=str(tmp_path / "prev.parq"),
                                          warm_start_mass=0.95, warm_start_pad=0.1))).run(
        [times], data_id={"field": "F1"}, data_ids=IDS)
    s = warm["summary"]
    assert s["warm_start"]["path"].endswith("prev.parq") and "c:period" in s["warm_start"]["narrowed"]
    assert s["priors"]["c:period"]["lo"] == pytest.approx(new["c:period"].lo, rel=1e-4)
    assert inside(s["planets"]["c"]["period_days"], c["period"])
    with pytest.raises(FileNotFoundError, match="warm_start"):
        TtvFitTask(TtvFitConfig(**dict(QUICK, warm_start=str(tmp_path / "nope.parq")))).run([times], data_ids=IDS)
