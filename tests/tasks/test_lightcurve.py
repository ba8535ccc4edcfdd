"""LightcurveTask on src tables synthesised from the demo survey's truth (``tests/truthdata.py``: what
``calibrate`` writes for every exposure; the session fixture ``truth_lightcurves`` of ``tests/tasks/conftest.py``
is the task's output on them, which test_periodogram.py and test_transit.py analyse too)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from truthdata import synth_src

from openastro_parsl.pipeline.task import NoWorkFound
from openastro_parsl.tasks.lightcurve import LightcurveConfig, LightcurveTask, bjd_tdb, flag_outliers


def test_lightcurve_schema_and_calibration(demo, truth_lightcurves):
    """Every exposure of the band containing the target is there, sorted, calibrated to the true magnitude."""
    truth = demo.truth
    out, injected = truth_lightcurves
    exps = {(e["instrument"], e["exposure"]): e for e in truth["exposures"]}
    for (name, band), lc in out.items():
        assert {"time", "mag", "mag_err", "flux", "flux_err", "instrument", "exposure", "site", "outlier"} <= set(lc.colnames)
        assert lc.meta["time_system"] == "BJD_TDB" and lc.meta["band"] == band and lc.meta["target"] == name
        assert lc.meta["colour_source"] == "refcat"
        assert np.all(np.diff(lc["time"]) > 0)
        n_expected = sum(1 for e in truth["exposures"] if e["band"] == band and e["targets"].get(name, {}).get("in_frame"))
        assert len(lc) == n_expected
        # calibrated mag vs the true magnitude at that time (truth records it per frame)
        true = np.array([exps[(i, int(x))]["targets"][name]["mag"] for i, x in zip(lc["instrument"], lc["exposure"], strict=True)])
        good = np.array([(name, str(i), int(x)) not in injected for i, x in zip(lc["instrument"], lc["exposure"], strict=True)])
        resid = np.asarray(lc["mag"])[good] - true[good]
        assert abs(np.median(resid)) < 0.01, (name, band, np.median(resid))
        assert np.std(resid) < 0.02
        # errors honest: pulls of non-outliers have a robust scatter near 1 (zp common error excluded)
        pull = resid / np.asarray(lc["mag_err"])[good]
        if good.sum() >= 30:  # a robust scatter of a dozen pulls is itself uncertain by ~30 %
            assert 0.6 < 1.4826 * np.median(np.abs(pull - np.median(pull))) < 2.5
        ok = ~np.asarray(lc["outlier"])
        assert lc.meta["flux_reference_mag"] == pytest.approx(np.median(np.asarray(lc["mag"])[ok]))
        assert np.allclose(lc["flux"], 10 ** (-0.4 * (np.asarray(lc["mag"]) - lc.meta["flux_reference_mag"])))
        assert set(lc["site"]) <= {f"{s['lat']:+.3f},{s['lon']:+.3f}" for inst in truth["instruments"].values()
                                   for s in inst["sites"].values()}


def test_ensemble_removes_per_frame_zero_point_noise(demo, truth_lightcurves):
    """The ensemble offsets take out the frames' zero-point noise: the constant-in-r host of the planet scatters
    about its true magnitude by half as much as with the frames' own zero points, and errors include the offset's."""
    truth = demo.truth
    exps = {(e["instrument"], e["exposure"]): e for e in truth["exposures"]}
    lc = truth_lightcurves[0][("OA-T1", "r")]
    true = np.array([exps[(i, int(x))]["targets"]["OA-T1"]["mag"] for i, x in zip(lc["instrument"], lc["exposure"], strict=True)])
    ok = ~np.asarray(lc["outlier"])
    assert lc.meta["ensemble"] and np.all(lc["n_comparison"][ok] >= 2)
    corrected = np.std((np.asarray(lc["mag"]) - true)[ok])
    frame_zp = np.std((np.asarray(lc["mag_frame"]) - true)[ok])
    assert corrected < 0.6 * frame_zp, (corrected, frame_zp)
    assert np.allclose(lc["mag"], np.asarray(lc["mag_frame"]) - np.asarray(lc["ensemble_offset"]))
    assert np.all(np.asarray(lc["mag_err"]) >= np.asarray(lc["ensemble_offset_err"]))


def test_outliers_flagged_without_flagging_signal(truth_lightcurves):
    """Injected outliers inside time series (neighbours within the window) or on the constant-in-g host are
    flagged; transits and pulsations are not (no false flags). A 0.1-0.4 mag jump on a single visit of a
    0.3-mag variable is not detectable without a model and is not asked for."""
    out, injected = truth_lightcurves
    caught, missed, false = [], [], []
    for (name, band), lc in out.items():
        t = np.asarray(lc["time"])
        for k, (inst, exp, flag) in enumerate(zip(lc["instrument"], lc["exposure"], lc["outlier"], strict=True)):
            inj = injected.get((name, str(inst), int(exp)))
            dense = np.sum(np.abs(t - t[k]) < 0.025) >= 3
            if inj is not None and (dense or name == "OA-T1"):
                (caught if flag else missed).append((name, band, int(exp)))
            elif inj is None and flag:
                false.append((name, band, int(exp)))
    assert len(caught) + len(missed) >= 4
    assert not missed, missed
    assert not false, false


def test_bjd_tdb_against_roemer_delay():
    """BJD_TDB - JD_UTC = (TDB-UTC) + r_earth . n / c to within the topocentric term (< 25 ms)."""
    import astropy.constants as const
    import astropy.units as u
    from astropy.coordinates import SkyCoord, get_body_barycentric
    from astropy.time import Time

    mjd = np.array([61100.2, 61130.7, 61160.1])
    ra, dec = 150.1, 2.2
    bjd = bjd_tdb(mjd, -30.17, -70.80, 2198.0, ra, dec)
    t = Time(mjd, format="mjd", scale="utc")
    n = SkyCoord(ra * u.deg, dec * u.deg).cartesian.xyz
    r = get_body_barycentric("earth", t.tdb).xyz
    roemer = ((r.T @ n) / const.c).to_value(u.s)
    tdb_utc = (t.tdb.jd - t.utc.jd) * 86400
    got = (bjd - t.utc.jd) * 86400
    assert np.all(np.abs(got - (tdb_utc + roemer)) < 0.025)
    # the correction changes by ~5 minutes over the demo's season: ignoring it would fake a TTV signal
    assert np.ptp(roemer) > 200


def test_flag_outliers_keeps_ingress():
    """A clean transit sampled at the demo's 21-min cadence: nothing flagged; a 0.1 mag spike is."""
    import batman

    rng = np.random.default_rng(3)
    t = np.linspace(-0.11, 0.11, 16)
    p = batman.TransitParams()
    p.t0, p.per, p.rp, p.a, p.inc, p.ecc, p.w, p.limb_dark, p.u = 0.0, 2.8, 0.12, 8.0, 88.5, 0.0, 90.0, "quadratic", [0.4, 0.2]
    mag = 12.0 - 2.5 * np.log10(batman.TransitModel(p, t).light_curve(p)) + rng.normal(0, 0.002, t.size)
    mag = np.concatenate([mag, 12.0 + rng.normal(0, 0.002, 4)])
    time = np.concatenate([t, [3.0, 10.0, 20.0, 30.0]])
    assert not flag_outliers(time, mag, window_days=0.05, sigma=5, global_sigma=6).any()
    mag[5] -= 0.1
    flags = flag_outliers(time, mag, window_days=0.05, sigma=5, global_sigma=6)
    assert flags[5] and flags.sum() == 1


def test_no_detection_is_no_work(demo):
    truth = demo.truth
    tables, ids, _ = synth_src(truth, seed=2, outlier_rate=0.0)
    far = {"target": {"name": "nowhere", "ra": 151.0, "dec": 3.0}}
    with pytest.raises(NoWorkFound, match="nowhere"):
        LightcurveTask().run(src=tables[:10], refcat=None, records=far, data_ids={"src": ids[:10]},
                             data_id={"target": "nowhere", "band": "r"})


def test_missing_meta_names_the_exposure():
    t = Table({"ra": [1.0], "dec": [1.0], "mag": [12.0], "mag_err": [0.01], "refcat_id": [-1]})
    t.meta["mjd_mid"] = 61100.0
    with pytest.raises(ValueError, match="exposure.: 77"):
        LightcurveTask(LightcurveConfig()).run(src=[t], records={"target": {"ra": 1.0, "dec": 1.0}},
                                               data_ids={"src": [{"instrument": "x", "exposure": 77}]},
                                               data_id={"target": "T", "band": "r"})


def test_target_is_matched_across_ra_zero():
    """A target at RA 359.9997 deg and its detections at RA 0.0002 deg (1.8" apart at dec 10): a light curve,
    not "found in 0 src tables" (a flat-sky distance would put them 360 degrees apart)."""
    tables, ids = [], []
    for k in range(4):
        t = Table({"ra": [0.0002, 0.02], "dec": [10.0, 10.0], "mag": [12.0 + 0.001 * k, 14.0],
                   "mag_err": [0.01, 0.02], "refcat_id": [-1, -1]})
        t.meta.update({"mjd_mid": 61100.0 + k, "band": "r", "instrument": "x", "site_lat": 30.0, "site_lon": -110.0,
                       "site_elev": 2000.0, "zp": 25.0, "zp_err": 0.01, "colour_term": 0.0})
        tables.append(t)
        ids.append({"instrument": "x", "exposure": k})
    lc = LightcurveTask(LightcurveConfig(ensemble=False)).run(
        src=tables, records={"target": {"name": "T", "ra": 359.9997, "dec": 10.0}}, data_ids={"src": ids},
        data_id={"target": "T", "band": "r"})["lightcurve"]
    assert len(lc) == 4 and np.allclose(lc["mag"], 12.0 + 0.001 * np.arange(4))
