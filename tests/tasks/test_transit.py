"""Transit search and timing: the demo's planet (against truth), injected transits (error coverage), and the
real TESS (WASP-126) and Kepler (HAT-P-7) light curves (against the published periods)."""

from __future__ import annotations

from pathlib import Path

import batman
import numpy as np
import pytest
from testdata import REAL_DATA

from openastro_parsl.pipeline.task import NoWorkFound
from openastro_parsl.tasks.lightcurve.transit import (
    TransitSearchConfig,
    TransitSearchTask,
    TransitTimingTask,
    biweight_trend,
    fit_global,
    measure_transit_times,
    oc_table,
)

TESS = REAL_DATA / "hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits"
KEPLER = REAL_DATA / "kplr010666592-2009131110544_slc.fits"
needs_real = pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real data folder {REAL_DATA} absent")


@pytest.fixture(scope="module")
def host(demo, truth_lightcurves):
    lcs, _ = truth_lightcurves
    truth = demo.truth
    tg = next(t for t in truth["targets"] if t["kind"] == "transit_host")
    records = {"target": {"name": tg["name"], "ra": tg["ra"], "dec": tg["dec"], "kind": tg["kind"]}}
    lc = [lcs[(tg["name"], "g")], lcs[(tg["name"], "r")]]
    search = TransitSearchTask().run(lightcurves=lc, records=records, data_id={"target": tg["name"]})
    return truth, tg, lc, search, lcs


def test_demo_planet_search(host):
    """The planet's period within 0.1 % of truth, its depth near (Rp/Rs)^2, detected; the plot renders."""
    truth, tg, lc, search, _ = host
    s = search["search"]
    p_true = truth["planet"]["linear_ephemeris"]["period"]
    assert s["detected"] and s["snr"] > 10
    assert abs(s["period"] - p_true) / p_true < 1e-3, (s["period"], p_true)
    assert abs(s["bls_period"] - p_true) / p_true < 1e-3
    assert 0.010 < s["depth"] < 0.020
    assert abs(s["duration"] * 24 - truth["planet"]["transit_duration_hours"]) < 0.75
    search["plot"].savefig(Path("/dev/null"), format="png")


def test_demo_transit_times_against_truth(host):
    """Each observed transit timed; truth times (the sim keeps them on the barycentric clock, BJD_TDB as MJD)
    within 3 sigma; O-C table and ephemeris consistent; the sim's observed epochs all found."""
    truth, tg, lc, search, _ = host
    out = TransitTimingTask().run(lightcurves=lc, search=search["search"], data_id={"target": tg["name"]})
    tab = out["times"]
    assert list(tab.colnames[:6]) == ["epoch", "t_obs", "t_obs_err", "t_pred", "oc", "oc_err"]
    pl = truth["planet"]
    true_bjd = np.array(pl["transit_times"]) + 2400000.5
    matched = [int(np.argmin(np.abs(true_bjd - t))) for t in tab["t_obs"]]
    assert sorted(pl["epochs"][i] for i in matched) == pl["observed_epochs"]
    z = (np.asarray(tab["t_obs"]) - true_bjd[matched]) / np.asarray(tab["t_obs_err"])
    assert np.all(np.abs(z) < 3), z
    assert np.all(np.asarray(tab["t_obs_err"]) * 1440 < 10)  # minutes
    # epochs count transits: differences match the truth's
    assert np.array_equal(np.diff(tab["epoch"]), np.diff([pl["epochs"][i] for i in matched]))
    assert np.allclose(tab["oc"], tab["t_obs"] - tab["t_pred"])
    p_true = pl["linear_ephemeris"]["period"]
    assert abs(tab.meta["period"] - p_true) / p_true < 1e-3
    assert tab.meta["time_system"] == "BJD_TDB"
    assert 0.10 < tab.meta["rp_rs"] < 0.14
    out["plot"].savefig(Path("/dev/null"), format="png")


def test_no_transit_is_no_work(host):
    truth, tg, lc, search, lcs = host
    var = next(t for t in truth["targets"] if t["kind"] == "variable")
    with pytest.raises(NoWorkFound, match="variable"):
        TransitSearchTask().run(lightcurves=[lcs[(var["name"], "r")]], records={"target": {"kind": "variable"}},
                                data_id={"target": var["name"]})
    with pytest.raises(NoWorkFound, match="no transit"):
        TransitTimingTask().run(lightcurves=lc, search=dict(search["search"], detected=False),
                                data_id={"target": tg["name"]})
    # a flat star searched anyway: nothing detected
    rng = np.random.default_rng(0)
    flat = lc[1].copy()
    flat["flux"] = 1 + rng.normal(0, 1, len(flat)) * np.asarray(flat["flux_err"])
    cfg = TransitSearchConfig(target_kinds=None, min_period=1.5)  # a coarser search keeps the test quick
    s = TransitSearchTask(cfg).run(lightcurves=[flat], data_id={"target": "flat"})
    assert not s["search"]["detected"]


def _inject(seed, n=120, period=2.8, noise=0.0025, ttv_min=3.0, cadence_min=21.0, half_span_h=2.6):
    """Demo-like transit nights: 16 frames at 21 min over +-2.6 h, 10 % lost, a per-night zero point and
    slope, white noise with known (varying) errors, random TTVs."""
    rng = np.random.default_rng(seed)
    t0 = 2461100.3
    tc = t0 + period * np.arange(n) + rng.normal(0, ttv_min / 1440, n)
    ts, fs, es = [], [], []
    k = int(2 * half_span_h * 60 / cadence_min) + 1
    for i, c in enumerate(tc):
        tt = t0 + period * i + (np.arange(k) - (k - 1) / 2) * cadence_min / 1440 + rng.normal(0, 4 / 86400, k)
        tt = tt[rng.uniform(size=k) > 0.1]
        p = batman.TransitParams()
        p.t0, p.per, p.rp, p.a, p.inc, p.ecc, p.w, p.limb_dark, p.u = c, period, 0.12, 8.0, 88.5, 0.0, 90.0, "quadratic", [0.43, 0.23]
        model = batman.TransitModel(p, tt).light_curve(p)
        base = 1 + rng.normal(0, 0.005) + rng.normal(0, 0.003) * (tt - tt.mean()) / 0.1
        err = noise * np.exp(rng.normal(0, 0.1, len(tt)))
        ts.append(tt)
        fs.append(model * base + rng.normal(0, 1, len(tt)) * err)
        es.append(err)
    return np.concatenate(ts), np.concatenate(fs), np.concatenate(es), tc, t0, period


def test_timing_errors_cover_injected_truth():
    """120 injected transits: ~68 % of recovered mid-times within 1 sigma of the truth, ~95 % within 2."""
    t, f, e, tc, t0, period = _inject(11)
    bands = np.full(len(t), "r")

    def u(b):
        return (0.43, 0.23)

    shape = fit_global(t, f, e, bands, period=period * 1.0002, t0=t0 + 0.003, duration=0.12, depth=0.015, u_by_band=u)
    assert shape.rp == pytest.approx(0.12, abs=0.01)
    times = measure_transit_times(t, f, e, bands, shape=shape, u_by_band=u)
    assert len(times) >= 110
    z = np.array([(x.t_obs - tc[x.epoch]) / x.t_obs_err for x in times])
    within1, within2 = np.mean(np.abs(z) < 1), np.mean(np.abs(z) < 2)
    assert 0.58 < within1 < 0.85, within1
    assert within2 > 0.90, within2
    tab = oc_table([x.epoch for x in times], [x.t_obs for x in times], [x.t_obs_err for x in times])
    assert abs(tab.meta["period"] - period) < 3 * tab.meta["period_err"] + 1e-5


def test_profile_half_width():
    """Delta chi2 = 1 on a parabola is one sigma; a flat-bottomed profile is wider; a grid that never crosses
    gives its whole half-span."""
    from openastro_parsl.tasks.lightcurve.transit import profile_half_width

    x = np.linspace(-10, 10, 401)
    assert profile_half_width(x, (x / 2.0) ** 2 + 5, 5.0, 1.0) == pytest.approx(2.0, abs=1e-3)
    assert profile_half_width(x, (x / 2.0) ** 2 + 5, 5.0, 4.0) == pytest.approx(4.0, abs=1e-3)
    flat = np.where(np.abs(x) < 3, 0.0, (np.abs(x) - 3) ** 2)
    assert profile_half_width(x, flat, 0.0, 1.0) == pytest.approx(4.0, abs=1e-3)
    assert profile_half_width(x, np.zeros_like(x), 0.0, 1.0) == pytest.approx(10.0)


def test_biweight_trend_with_transit_mask():
    """A slow wiggle under a transit: masked, the trend follows the wiggle, not the dip."""
    t = np.arange(0, 5, 2 / 1440)
    wiggle = 1 + 0.003 * np.sin(2 * np.pi * t / 10.0)
    dip = np.where(np.abs(t - 2.5) < 0.06, 0.99, 1.0)
    inner = (t > 0.4) & (t < 4.6)  # half a window from the ends, where the window is one-sided
    trend = biweight_trend(t, wiggle * dip, 0.75, mask=np.abs(t - 2.5) < 0.09)
    assert np.max(np.abs(trend / wiggle - 1)[inner]) < 1e-4
    # a ground-based night: 5 h of data, mostly in transit; unmasked, the robust location is dragged down
    rng = np.random.default_rng(2)
    night = np.linspace(2.39, 2.61, 16)
    flux = np.where(np.abs(night - 2.5) < 0.061, 0.986, 1.0) + rng.normal(0, 0.002, night.size)
    unmasked = biweight_trend(night, flux, 0.75)
    masked = biweight_trend(night, flux, 0.75, mask=np.abs(night - 2.5) < 0.08)
    assert np.all(np.abs(unmasked - 1) > 0.004)  # why the search masks transits and iterates
    assert np.all(np.abs(masked - 1) < 0.003)


@needs_real
@pytest.mark.parametrize("path,period,depth", [(TESS, 3.2888, (0.005, 0.0075)), (KEPLER, 2.2047299, (0.005, 0.007))],
                         ids=["WASP-126-TESS", "HAT-P-7-Kepler"])
def test_real_light_curves(path, period, depth):
    """Published periods within 0.1 % (search and timing ephemeris); depths as published; O-C flat."""
    from openastro_parsl.ingest.lightcurves import read_mission_lightcurve

    lc = read_mission_lightcurve(path)
    s = TransitSearchTask(TransitSearchConfig(target_kinds=None)).run(lightcurves=[lc])["search"]
    assert s["detected"] and s["snr"] > 50
    assert abs(s["period"] - period) / period < 1e-3, s["period"]
    assert abs(s["bls_period"] - period) / period < 1e-3, s["bls_period"]
    assert depth[0] < s["depth"] < depth[1]
    tab = TransitTimingTask().run(lightcurves=[lc], search=s)["times"]
    assert len(tab) >= 4
    assert abs(tab.meta["period"] - period) / period < 1e-3
    assert abs(tab.meta["period"] - period) < 5 * tab.meta["period_err"] + 1e-4
    assert tab.meta["chi2_red"] < 3  # no TTVs in these systems: O-C consistent with the errors
