"""Joint TTV fits of several planets (tasks/lightcurve/ttv*.py) on synthetic systems whose truth is known.

The transit times are made by the same TTVFast model at chosen masses and orbits plus seeded Gaussian
noise, and fitted with wide-ish priors and few live points (circular orbits held fixed to keep the
dimension, and the test's time, small): the truth must lie in the 95 % intervals of both masses and
periods, with intervals narrower than the priors.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from openastro_parsl.tasks.lightcurve import ttv_model as tm
from openastro_parsl.tasks.lightcurve.ttv import TtvFitConfig, TtvFitTask, build_model
from openastro_parsl.tasks.lightcurve.ttv_priors import Prior
from openastro_parsl.tasks.lightcurve.ttv_sampling import sample_posterior

# Two sub-Neptunes just wide of 2:1 around a 0.9 Msun star
TRUTH = {"b:mass": 25.0, "b:period": 10.0, "b:t0": 1000.3, "b:eccentricity": 0.0, "b:omega": 90.0,
         "c:mass": 15.0, "c:period": 20.25, "c:t0": 1007.1, "c:eccentricity": 0.0, "c:omega": 90.0}
STAR = 0.9
EPOCHS = {"b": np.r_[0:8, 30:38], "c": np.r_[0:5, 14:19]}


def synthetic_tables(seed: int, err_min: float = 1.0) -> dict[str, Table]:
    """transitTimes tables of b and c from the model at TRUTH, with err_min-minute Gaussian noise."""
    data = tuple(tm.TransitData(n, EPOCHS[n], TRUTH[f"{n}:t0"] + TRUTH[f"{n}:period"] * EPOCHS[n],
                                np.ones(len(EPOCHS[n])), TRUTH[f"{n}:t0"], TRUTH[f"{n}:period"]) for n in "bc")
    model = tm.SystemModel(data, (), tuple(Prior(k, v, v) for k, v in TRUTH.items()), STAR)
    times = model.transit_times(model.params([]))
    rng = np.random.default_rng(seed)
    out = {}
    for d, t in zip(data, times, strict=True):
        err = np.full(d.n, err_min / 1440.0)
        out[d.name] = Table({"epoch": d.epochs, "t_obs": t + rng.normal(0, err), "t_obs_err": err},
                            meta={"time_system": "BJD_TDB"})
    return out


def joint_config(**kw) -> TtvFitConfig:
    base = dict(stellar_masses={"SYS": STAR}, n_cores=1, nlive=80, n_runs=1, seed=5, n_oc_draws=5,
                planet_defaults=dict(mass_earth=[1.0, 200.0], mass_prior="log", eccentricity_max=0.0,
                                     period_window=0.004, t0_window_days=0.05))
    return TtvFitConfig(**(base | kw))


IDS = {"transit_times": [{"target": "b"}, {"target": "c"}]}


@pytest.fixture(scope="module")
def tables():
    return synthetic_tables(seed=11)


@pytest.fixture(scope="module")
def joint(tables):
    return TtvFitTask(joint_config()).run([tables["b"], tables["c"]], data_id={"field": "SYS"}, data_ids=IDS)


def test_two_planets_recover_both_masses_and_periods(joint):
    s = joint["summary"]
    assert s["system"] == "SYS" and s["stellar_mass_msun"] == STAR and s["warnings"] == []
    assert s["n_transits"] == {"b": 16, "c": 10} and s["evidence_comparison"] is None
    for n in "bc":
        p = s["planets"][n]
        assert p["transiting"]
        assert p["period_days"]["lo95"] <= TRUTH[f"{n}:period"] <= p["period_days"]["hi95"], (n, p["period_days"])
        assert p["mass_earth"]["lo95"] <= TRUTH[f"{n}:mass"] <= p["mass_earth"]["hi95"], (n, p["mass_earth"])
        # a measurement: the 95 % interval spans well under the prior's factor of 200
        assert p["mass_earth"]["hi95"] / p["mass_earth"]["lo95"] < 4
        assert p["mass_ratio"]["median"] == pytest.approx(p["mass_earth"]["median"] * 3.003489596e-6 / STAR)
        assert p["eccentricity"]["hi95"] == 0.0 and p["ecosw"]["median"] == pytest.approx(0.0, abs=1e-12)
    assert s["timestep_check"]["max_shift_sigma"] < 0.1
    assert s["timestep_check"]["timestep_days"] == pytest.approx(0.05 * s["max_likelihood"]["b:period"])
    assert len(joint["oc"].axes) == 2  # an O-C panel per transiting planet
    assert np.isfinite(s["log_evidence"]) and s["log_evidence_err"] > 0 and s["n_likelihood_calls"] > 1000


def test_a_coarse_step_is_reported(tables):
    """Halving a 1/10-period step moves 1-second-error times by more than the threshold: a warning."""
    fine = {k: t.copy() for k, t in tables.items()}
    for t in fine.values():
        t["t_obs_err"] = 1.0 / 86400.0
    cfg = joint_config(timestep_fraction=0.1, step_check_sigma=0.1, nlive=30, maxcall=3000)
    s = TtvFitTask(cfg).run([fine["b"], fine["c"]], data_id={"field": "SYS"}, data_ids=IDS)["summary"]
    assert s["timestep_check"]["max_shift_sigma"] >= 0.1
    assert any("halving the TTVFast step" in w and "lower timestep_fraction" in w for w in s["warnings"])


@pytest.mark.filterwarnings("ignore:The sampling was stopped short")
def test_perturber_evidence_is_compared_with_the_model_without_it(tables):
    """An extra non-transiting planet: both evidences and their difference are in the summary."""
    cfg = joint_config(nlive=40, maxcall=6000, perturbers=[{"name": "d", "period": [40.0, 60.0],
                                                            "mass_earth": [1.0, 30.0]}])
    s = TtvFitTask(cfg).run([tables["b"], tables["c"]], data_id={"field": "SYS"}, data_ids=IDS)["summary"]
    cmp = s["evidence_comparison"]
    assert set(s["planets"]) == {"b", "c", "d"} and not s["planets"]["d"]["transiting"]
    assert cmp["with_perturbers"]["log_evidence"] == s["log_evidence"]
    assert cmp["ln_bayes_factor"] == pytest.approx(s["log_evidence"] - cmp["without_perturbers"]["log_evidence"])
    assert cmp["without_perturbers"]["n_likelihood_calls"] > 0 and cmp["ln_bayes_factor_err"] > 0
    assert "d:mean_longitude" in s["free_parameters"]


def test_targets_selects_planets_and_names_come_from_data_ids(tables):
    """``targets`` keeps a subset of the field's transitTimes; planets in config must have transit times."""
    cfg = joint_config(targets=["c"], nlive=20, maxcall=500, compare_without_perturbers=False,
                       perturbers=[{"name": "x", "period_ratio": [0.45, 0.55]}])
    s = TtvFitTask(cfg).run([tables["b"], tables["c"]], data_id={"field": "SYS"}, data_ids=IDS)["summary"]
    assert set(s["planets"]) == {"c", "x"} and s["n_transits"] == {"c": 10}
    with pytest.raises(ValueError, match="no transit times for them"):
        TtvFitTask(joint_config(planets={"e": {}})).run([tables["b"]], data_id={"field": "SYS"},
                                                        data_ids={"transit_times": [{"target": "b"}]})


@pytest.mark.filterwarnings("ignore:The sampling was stopped short")
def test_independent_runs_are_merged_checkpointed_and_compared(tables, tmp_path):
    """``n_runs`` runs with their own random streams, merged into one posterior (every run's samples, the
    calls summed), one checkpoint per run; a rerun reuses every finished run without a new likelihood call."""
    cfg = joint_config(n_runs=2, nlive=20, maxcall=800, compare_without_perturbers=False, checkpoint_every_s=1e9)
    out = TtvFitTask(cfg).run([tables["b"], tables["c"]], checkpoint_dir=str(tmp_path), data_id={"field": "SYS"},
                              data_ids=IDS)
    s = out["summary"]
    runs = s["sampler"]["runs"]
    assert s["sampler"]["n_runs"] == 2 and [r["run"] for r in runs] == [0, 1]
    assert s["n_likelihood_calls"] == sum(r["ncall"] for r in runs) and "2 runs merged" in s["sampler"]["method"]
    assert runs[0]["log_evidence"] != runs[1]["log_evidence"]  # independent streams, not one run twice
    assert len(out["posterior"]) == sum(r["n_samples"] for r in runs)
    assert np.isclose(np.sum(out["posterior"]["weight"]), 1.0)
    assert s["run_agreement"]["n_runs"] == 2 and isinstance(s["run_agreement"]["agree"], bool)
    assert (tmp_path / "ttv_dynesty.pkl").exists() and (tmp_path / "ttv_dynesty_run2.pkl").exists()
    data = [tm.TransitData.from_table(tables[n], name=n) for n in "bc"]
    results, info = sample_posterior(build_model(cfg, data, STAR), nlive=20, n_runs=2, maxcall=800, seed=5,
                                     checkpoint_file=tmp_path / "ttv_dynesty.pkl")
    assert info["resumed"] and info["ncall_at_resume"] == info["ncall"] == s["n_likelihood_calls"]
    assert float(results.logz[-1]) == s["log_evidence"]


@pytest.mark.filterwarnings("ignore:The sampling was stopped short")
def test_cartesian_eccentricities_are_sampled_in_their_disc_and_reported_as_e_and_omega(tables):
    """``eccentricity_coordinates: cartesian`` samples sqrt(e) cos w, sqrt(e) sin w: no periodic parameter, no
    likelihood outside the disc e <= e_max, e and omega in the posterior and summary as with polar ones, and the
    evidence raised by the disc's prior fraction."""
    cfg = joint_config(nlive=25, maxcall=1000, n_oc_draws=2, eccentricity_coordinates="cartesian",
                       planet_defaults=dict(mass_earth=[1.0, 200.0], eccentricity_prior="uniform",
                                            eccentricity_max=0.1, period_window=0.004, t0_window_days=0.05))
    data = [tm.TransitData.from_table(tables[n], name=n) for n in "bc"]
    model = build_model(cfg, data, STAR)
    assert "b:secosw" in model.free and "b:omega" not in model.free and model.periodic == []
    assert model.log_evidence_offset == pytest.approx(-2 * np.log(np.pi / 4))
    x = model.prior_transform(np.full(model.ndim, 0.5))
    x[model.free.index("c:secosw")], x[model.free.index("c:sesinw")] = 0.2, -0.2  # e = 0.08, omega = 315
    p = model.params(x)
    assert p["c:eccentricity"] == pytest.approx(0.08) and p["c:omega"] == pytest.approx(315.0)
    assert model.loglike(x) > tm.LOGL_REJECT
    x[model.free.index("c:secosw")] = 0.3  # e = 0.13 > 0.1
    assert model.loglike(x) == tm.LOGL_REJECT
    out = TtvFitTask(cfg).run([tables["b"], tables["c"]], data_id={"field": "SYS"}, data_ids=IDS)
    s, post = out["summary"], out["posterior"]
    assert s["sampler"]["eccentricity_coordinates"] == "cartesian"
    assert s["model"]["eccentricity_coordinates"] == {"b": "cartesian", "c": "cartesian"}
    e = np.asarray(post["c:eccentricity"])[post["weight"] > 0]  # rejected draws stay in the table, weight 0
    assert e.max() <= 0.1 + 1e-12 and np.allclose(np.hypot(post["c:ecosw"], post["c:esinw"]), post["c:eccentricity"])
    assert 0.0 <= s["planets"]["b"]["omega_deg"]["lo95"] <= s["planets"]["b"]["omega_deg"]["hi95"] < 360.0
    assert s["sampler"]["runs"][0]["log_evidence"] == pytest.approx(s["log_evidence"])


def _toy_run(centre: float, seed: int, offset: float = 0.0):
    """A real dynesty run on a narrow 1-D Gaussian likelihood at ``centre`` (raised by ``offset`` in ln L)."""
    import dynesty

    sampler = dynesty.NestedSampler(lambda x: offset - 0.5 * ((x[0] - centre) / 0.02) ** 2, lambda u: u, 1,
                                    nlive=40, rstate=np.random.default_rng(seed))
    sampler.run_nested(dlogz=0.5, print_progress=False)
    return sampler.results


def test_run_agreement_flags_runs_in_other_modes_or_with_other_evidence():
    from openastro_parsl.tasks.lightcurve.ttv import disagreement_warning
    from openastro_parsl.tasks.lightcurve.ttv_sampling import run_agreement

    a, b = _toy_run(0.3, 1), _toy_run(0.3, 2)
    same = run_agreement(["x"], [a, b])
    assert same["agree"] and same["log_evidence_spread"] <= same["log_evidence_tolerance"]
    other_mode = run_agreement(["x"], [a, _toy_run(0.7, 3)])
    assert not other_mode["agree"] and other_mode["parameters_disagreeing"] == ["x"]
    other_z = run_agreement(["x"], [a, _toy_run(0.3, 4, offset=5.0)])
    assert not other_z["agree"] and other_z["parameters_disagreeing"] == []
    assert 4.0 < other_z["log_evidence_spread"] < 6.0
    line = disagreement_warning(other_z)
    assert "log-evidences spread by" in line and "raise nlive or n_runs" in line and "\n" not in line
    assert run_agreement(["x"], [a]) == {"n_runs": 1, "sigma": 3.0, "agree": True, "log_evidence_spread": 0.0,
                                         "log_evidence_tolerance": 0.0, "parameters_disagreeing": []}
