"""The field-level joint calibration (``ubercal.fit_field``, ``fieldCalibration``) on synthetic fields with known
truth, including the failure it fixes: colour terms pooled over a camera's frames of the same few stars, whose
catalogue errors never average down."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from openastro_parsl.pipeline.task import NoWorkFound
from openastro_parsl.tasks import photometry as P
from openastro_parsl.testing import run_task

MPF = 2.5 / np.log(10.0)
CALIB = P.SOURCE_FLAGS["CALIB_USED"]
# instrument -> (colour term per band, stars it sees, frames per band, measurement noise floor)
CAMERAS = {"big": ({"g": 0.05, "r": -0.03}, 10, 30, 0.004), "wide": ({"g": 0.18, "r": -0.11}, 40, 6, 0.008)}


def _field(rng, n_stars=40, cat_err=(0.01, 0.03), quoted=None):
    """True stars, their catalogue (truth + N(0, err)) and the measurements of every frame of two cameras: the
    small-field one sees the ten central stars, the wide one all forty."""
    r = rng.uniform(12.0, 17.0, n_stars)
    colour = np.clip(np.where(rng.random(n_stars) < 0.25, rng.normal(1.28, 0.08, n_stars),
                              rng.normal(0.55, 0.17, n_stars)), 0.2, 1.4)
    g = r + colour
    err = cat_err[0] + (cat_err[1] - cat_err[0]) * ((r - 12.0) / 5.0) ** 2
    cat = {"id": np.arange(1, n_stars + 1), "g": g + rng.normal(0, err), "r": r + rng.normal(0, err),
           "g_err": err if quoted is None else np.full(n_stars, quoted),
           "r_err": err if quoted is None else np.full(n_stars, quoted)}
    frames, meas = [], []
    for inst, (ct, n_seen, n_frames, noise) in CAMERAS.items():
        for band in "gr":
            for _ in range(n_frames):
                f = len(frames)
                zp = 22.0 + rng.normal(0, 0.05)
                frames.append({"instrument": inst, "band": band, "exposure": 1000 + f, "zp": zp, "ct": ct[band]})
                m = (g if band == "g" else r)[:n_seen]
                sig = np.hypot(noise, 0.002 * 10 ** (0.2 * (m - 12.0)))
                inst_mag = m + ct[band] * colour[:n_seen] - zp + rng.normal(0, sig)
                meas += [(f, s, inst_mag[s], sig[s]) for s in range(n_seen)]
    frame, star, y, e = (np.array(v) for v in zip(*meas, strict=True))
    return {"frames": frames, "frame": frame.astype(int), "star": star.astype(int), "y": y, "e": e,
            "cat": Table(cat), "colour": colour}


def _fit(f, **kw):
    groups = sorted({(x["instrument"], x["band"]) for x in f["frames"]})
    fg = np.array([groups.index((x["instrument"], x["band"])) for x in f["frames"]])
    fc = np.array([0 if x["band"] == "g" else 1 for x in f["frames"]])
    cat = np.column_stack([f["cat"]["g"], f["cat"]["r"]])
    err = np.column_stack([f["cat"]["g_err"], f["cat"]["r_err"]])
    fit = P.fit_field(f["frame"], f["star"], f["y"], f["e"], frame_group=fg, frame_column=fc, cat_mag=cat,
                      cat_err=err, blue=0, red=1, **kw)
    return fit, groups, fg


def test_field_fit_recovers_the_model_and_drops_outliers():
    rng = np.random.default_rng(1)
    f = _field(rng, cat_err=(1e-4, 1e-4), quoted=1e-3)
    hit = np.flatnonzero(f["frame"] == 3)[2]
    f["y"][hit] -= 0.4  # a cosmic ray on one star of one frame
    fit, groups, fg = _fit(f)
    d = fit.zp - np.array([x["zp"] for x in f["frames"]])
    assert np.all(np.abs(d) < 3 * fit.zp_err) and np.sqrt(np.mean(d ** 2)) < 0.004
    for k, (inst, band) in enumerate(groups):
        assert fit.colour_term[k] == pytest.approx(CAMERAS[inst][0][band], abs=3 * fit.colour_term_err[k])
    assert not fit.used[hit] and fit.used.sum() >= len(f["y"]) - 3
    assert 0.5 < fit.chi2_red < 1.5 and (fit.n_used_frame > 0).all()


def test_pooled_colour_terms_miss_by_the_catalogue_errors_the_field_fit_quotes():
    """The failure mode: one camera's frames all see the same ten stars, so the per-frame colour terms share those
    stars' catalogue errors; pooling them quotes an error several times too small, and the zero-point at g-r = 0
    inherits the miss. The joint fit's colour-term errors describe its misses, and tying the small camera to the
    forty stars of the wide one shrinks them."""
    pooled_pull, joint_pull, pooled_zp, joint_zp = [], [], [], []
    for seed in range(12):
        f = _field(np.random.default_rng(100 + seed))
        fit, groups, fg = _fit(f)
        k = groups.index(("big", "r"))
        ct_true = CAMERAS["big"][0]["r"]
        frames = [i for i, x in enumerate(f["frames"]) if (x["instrument"], x["band"]) == ("big", "r")]
        per = []
        for i in frames:
            m = f["frame"] == i
            s = f["star"][m]
            y = f["cat"]["r"][s] - f["y"][m]
            col = (f["cat"]["g"] - f["cat"]["r"])[s]
            sig = np.sqrt(f["e"][m] ** 2 + f["cat"]["r_err"][s] ** 2)
            per.append(P.fit_zeropoint(y, col, sig))
        ct, ct_err, _ = P.pooled_colour_term(np.array([p.colour_term for p in per]),
                                             np.array([p.colour_term_err for p in per]))
        zp_pooled = np.array([p.zp + (ct - p.colour_term) * p.colour_mean for p in per])
        zp_true = np.array([f["frames"][i]["zp"] for i in frames])
        pooled_pull.append((ct - ct_true) / ct_err)
        joint_pull.append((fit.colour_term[k] - ct_true) / fit.colour_term_err[k])
        pooled_zp.append(np.mean(zp_pooled - zp_true))
        joint_zp.append(np.mean(fit.zp[frames] - zp_true))
    rms = lambda v: float(np.sqrt(np.mean(np.square(v))))  # noqa: E731
    assert rms(pooled_pull) > 2.5  # the pooled error is far too small
    assert 0.6 < rms(joint_pull) < 1.5  # the joint fit's describes its misses
    assert rms(joint_zp) < 0.7 * rms(pooled_zp)  # and the forty stars pin the small camera's zero-point better


def test_a_star_that_varies_through_the_frames_gets_its_scatter_not_the_zero_points():
    rng = np.random.default_rng(5)
    f = _field(rng, cat_err=(1e-4, 1e-4), quoted=1e-3)
    bright = int(np.argmin(f["cat"]["r"][:10]))  # seen by both cameras: an unflagged eclipsing binary, 0.04 mag
    dipped = (f["star"] == bright) & (f["frame"] % 2 == 0)  # fainter in half the frames (below the clipping)
    f["y"][dipped] += 0.04
    zp_true = np.array([x["zp"] for x in f["frames"]])
    with_scatter, *_ = _fit(f)
    without, *_ = _fit(f, star_scatter=False)
    assert with_scatter.star_scatter[bright] == pytest.approx(0.02, abs=0.005)

    def dip_shift(fit):  # the frames where the host dipped against the others
        d, even = fit.zp - zp_true, np.arange(len(zp_true)) % 2 == 0
        return abs(d[even].mean() - d[~even].mean())

    rms = [float(np.sqrt(np.mean((fit.zp - zp_true) ** 2))) for fit in (with_scatter, without)]
    assert dip_shift(with_scatter) < 0.3 * dip_shift(without) and rms[0] < 0.7 * rms[1]


def _src_tables(f):
    """src tables as calibrate writes them (the columns and meta fieldCalibration reads)."""
    out = []
    for i, x in enumerate(f["frames"]):
        m = f["frame"] == i
        exptime, gain = 30.0, 1.5
        flux = exptime / gain * 10 ** (-0.4 * f["y"][m])
        t = Table({"refcat_id": f["cat"]["id"][f["star"][m]], "flux": flux, "flux_err": flux * f["e"][m] / MPF,
                   "flags": np.full(m.sum(), CALIB, np.int32)})
        t.add_row({"refcat_id": -1, "flux": 100.0, "flux_err": 5.0, "flags": 0})  # unmatched: not used
        t.meta.update({"instrument": x["instrument"], "band": x["band"], "exposure": x["exposure"],
                       "exptime": exptime, "gain": gain})
        out.append(t)
    return out


def test_field_calibration_task_and_zeropoint_history_read_it():
    f = _field(np.random.default_rng(3), cat_err=(1e-4, 1e-4), quoted=1e-3)
    srcs = _src_tables(f)
    ids = [{"instrument": x["instrument"], "exposure": x["exposure"]} for x in f["frames"]]
    out = run_task(P.FieldCalibrationTask, src=srcs, refcat=f["cat"], data_ids={"src": ids},
                   data_id={"field": "f1"})["zeropoints"]
    assert len(out) == len(f["frames"]) and out.meta["n_stars"] == 40 and out.meta["field"] == "f1"
    truth = {x["exposure"]: x["zp"] for x in f["frames"]}
    assert all(abs(r["zp"] - truth[int(r["exposure"])]) < 3 * r["zp_err"] for r in out)
    assert out.meta["colour_terms"]["wide/g"][0] == pytest.approx(0.18, abs=0.004)
    # zeropointHistory: zp_pooled from the field fit where it has the exposure, the pooled fallback elsewhere
    rows = [{"instrument": "big", "band": "r", "exposure": int(r["exposure"]), "mjd_mid": 61000.0 + i,
             "airmass": 1.2, "exptime": 30.0, "zp": r["zp"] + 0.03, "zp_err": 0.01, "colour_term": 0.0,
             "colour_term_err": 0.05, "colour_term_fitted": True, "colour_mean": 0.6, "scatter": 0.01,
             "n_matched": 10, "n_used": 10, "fwhm_pix": 2.0, "zp_adu": 25.0}
            for i, r in enumerate(out) if (r["instrument"], r["band"]) == ("big", "r")]
    rows.append(dict(rows[0], exposure=99999, mjd_mid=62000.0))
    hist = P.ZeropointHistoryTask().run(photoCalib=rows, fieldZeropoints=[out])["history"]
    joint = {int(r["exposure"]): r["zp"] for r in out}
    assert list(hist["zp_source"]) == ["field"] * (len(rows) - 1) + ["pooled"]
    assert np.allclose(hist["zp_pooled"][:-1], [joint[int(e)] for e in hist["exposure"][:-1]])
    assert hist.meta["colour_term_source"] == "field"
    assert hist.meta["colour_term"] == pytest.approx(out.meta["colour_terms"]["big/r"][0])


def test_bad_inputs_name_the_frame():
    f = _field(np.random.default_rng(4))
    srcs = _src_tables(f)
    del srcs[2].meta["gain"]
    with pytest.raises(ValueError, match=r"src \{'exposure': 1002\}: src lacks gain"):
        P.field_measurements(srcs, f["cat"], names=[f"src {{'exposure': {x['exposure']}}}" for x in f["frames"]])
    srcs = _src_tables(f)
    srcs[1]["refcat_id"][0] = 777
    with pytest.raises(ValueError, match="src #1: refcat_id 777 is not in the field's refcat"):
        P.field_measurements(srcs, f["cat"])
    with pytest.raises(ValueError, match="refcat lacks column 'g_err'"):
        P.field_measurements(srcs, f["cat"]["id", "g", "r", "r_err"])
    empty = _src_tables(f)
    for t in empty:
        t["flags"] = 0
    with pytest.raises(NoWorkFound, match="no frame of the field has a calibration star"):
        P.field_measurements(empty, f["cat"])
    with pytest.raises(ValueError, match=r"frame\(s\) \[1\] have no \(finite\) measurement"):
        P.fit_field([0, 2], [0, 0], [1.0, 1.0], [0.01, 0.01], frame_group=[0, 0, 0], frame_column=[0, 0, 0],
                    cat_mag=np.ones((1, 2)), cat_err=np.full((1, 2), 0.01), blue=0, red=1)


def test_catalogue_columns_default_to_those_calibrate_used():
    """Bands named as the observatory names them (here 'B' and 'R') need no second band_map: each src says which
    catalogue column and colour calibrate used; two colour indices in one field are refused by name."""
    f = _field(np.random.default_rng(5))
    srcs = _src_tables(f)
    renamed = {"g": "B", "r": "R"}
    for t in srcs:
        t.meta.update({"refcat_band": t.meta["band"], "colour_index": "g-r", "band": renamed[t.meta["band"]]})
    with pytest.raises(ValueError, match="band 'B' has no refcat column 'B'"):
        P.field_measurements(srcs, f["cat"], band_map={})
    m = P.field_measurements(srcs, f["cat"])
    assert m.colour_index == "g-r" and {b for _, b in m.groups} == {"B", "R"}
    srcs[0].meta["colour_index"] = "BP-RP"
    with pytest.raises(ValueError, match="different colour indices"):
        P.field_measurements(srcs, f["cat"])


def _true_colour_terms(groups):
    return np.array([CAMERAS[i][0][b] for i, b in groups])


def test_known_colour_terms_pin_the_fit_and_remove_the_catalogue_colour_error():
    """The field's catalogue errors set its colour scale, so the zero-points at colour 0 share a miss that no frame
    count removes; colour terms known from elsewhere (a standard field) take it away. A tight prior pins its group."""
    rms = lambda v: float(np.sqrt(np.mean(np.square(v))))  # noqa: E731
    free, known = [], []
    for seed in range(10):
        f = _field(np.random.default_rng(200 + seed))
        zp_true = np.array([x["zp"] for x in f["frames"]])
        fit, groups, _ = _fit(f)
        free.append(np.mean(fit.zp - zp_true))
        fit, groups, _ = _fit(f, ct_prior_mean=_true_colour_terms(groups), ct_prior_sigma=0.003)
        known.append(np.mean(fit.zp - zp_true))
    assert rms(known) < 0.6 * rms(free)
    f = _field(np.random.default_rng(7))
    _, groups, _ = _fit(f)
    mean, sigma, pinned = P.colour_term_priors(groups, "g-r", {"big/r": (-0.5, 1e-6)}, "g-r", 1.0)
    fit, _, _ = _fit(f, ct_prior_mean=mean, ct_prior_sigma=sigma)
    k = groups.index(("big", "r"))
    assert pinned == ["big/r"] and fit.colour_term[k] == pytest.approx(-0.5, abs=1e-5)
    with pytest.raises(ValueError, match="positive, finite widths"):
        _fit(f, ct_prior_sigma=0.0)


def test_known_colour_terms_config_is_checked_and_used_by_the_task():
    from openastro_parsl.tasks.photometry.fieldcal import FieldCalibrationConfig

    with pytest.raises(ValueError, match="'wide-g' is not INSTRUMENT/BAND"):
        FieldCalibrationConfig(colour_terms={"wide-g": (0.1, 0.01)}, colour_terms_index="g-r")
    with pytest.raises(ValueError, match=r"wide/g: needs a finite value and a positive error"):
        FieldCalibrationConfig(colour_terms={"wide/g": (0.1, 0.0)}, colour_terms_index="g-r")
    assert FieldCalibrationConfig(colour_terms={"wide/g": (0.1, 0.01)}).colour_terms_index == "g-r"
    f = _field(np.random.default_rng(3))
    srcs = _src_tables(f)
    ids = {"src": [{"instrument": x["instrument"], "exposure": x["exposure"]} for x in f["frames"]]}
    config = {"colour_terms": {"wide/g": [0.18, 0.002], "nosuch/r": [0.0, 0.01]}, "colour_terms_index": "g-r"}
    out = run_task(P.FieldCalibrationTask, config=config, src=srcs, refcat=f["cat"], data_ids=ids,
                   data_id={"field": "f1"})["zeropoints"]
    assert out.meta["colour_terms_known"] == ["wide/g"]
    ct, err = out.meta["colour_terms"]["wide/g"]
    assert ct == pytest.approx(0.18, abs=0.004) and err < 0.002
    config["colour_terms_index"] = "BP-RP"
    with pytest.raises(ValueError, match="measured against BP-RP, but this field is fitted with g-r"):
        run_task(P.FieldCalibrationTask, config=config, src=srcs, refcat=f["cat"], data_ids=ids,
                 data_id={"field": "f1"})


def test_colour_terms_pool_over_fields_and_leave_out_fits_that_took_them_as_known():
    def fit_table(field, terms, known=(), index="g-r"):
        t = Table({"zp": [0.0]})
        t.meta.update({"field": field, "colour_index": index, "colour_terms": terms, "colour_terms_known": list(known)})
        return t

    pooled, notes = P.pool_colour_terms([
        fit_table("a", {"cam/g": [0.10, 0.01], "cam/r": [-0.05, 0.02]}),
        fit_table("b", {"cam/g": [0.13, 0.02], "cam/r": [0.30, 0.01]}, known=["cam/r"]),
        fit_table("c", {"cam/g": [0.40, 0.01]}, index="BP-RP")])
    by = {(p.colour_index, p.key): p for p in pooled}
    g = by[("g-r", "cam/g")]
    assert g.value == pytest.approx((0.10 / 0.01**2 + 0.13 / 0.02**2) / (1 / 0.01**2 + 1 / 0.02**2))
    assert g.chi2_red == pytest.approx(1.8) and g.error == pytest.approx(np.sqrt(1.8 / (1 / 0.01**2 + 1 / 0.02**2)))
    assert by[("g-r", "cam/r")].fields == [("a", -0.05, 0.02)] and by[("BP-RP", "cam/g")].value == 0.40
    assert notes == ["field b: cam/r left out (its fit took the colour term as known)"]
    with pytest.raises(ValueError, match="2 colour indices"):
        P.override_file(pooled)
    text = P.override_file([p for p in pooled if p.colour_index == "g-r"])
    assert "colour_terms_index: g-r" in text and "cam/r: [-0.0500, 0.0200]" in text
