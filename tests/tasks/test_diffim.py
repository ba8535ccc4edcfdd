"""Difference imaging on simulated pairs with injected sources of known position and flux."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits

from openastro_parsl.astro.wcs import tan_wcs as _tan_wcs
from openastro_parsl.datastore.image import MASK_BITS, Image
from openastro_parsl.pipeline.task import NoWorkFound
from openastro_parsl.tasks.transient import diffim as D
from openastro_parsl.tasks.transient.training import Conditions, render_stars, simulate_pair

# Well-sampled frames with enough stars for a fitted kernel, nothing but injected sources changing.
CLEAN = Conditions(density=(30.0, 40.0), pixel_scale=(0.5, 0.8), seeing_arcsec=(1.6, 2.4), depth_mag=(19.5, 20.5),
                   size=(128, 128), misaligned_fraction=0.0, smear_fraction=0.0, trail_fraction=0.0,
                   partial_template_fraction=0.0, cosmic_rays_per_frame=0.0, hot_pixels_per_frame=0.0,
                   template_artefacts_per_frame=0.0, on_star_fraction=0.0, fading_fraction=0.0)


def _pair(seed, i, cond=CLEAN):
    return simulate_pair(np.random.default_rng(np.random.SeedSequence([seed, i])), cond)


def _matches(pair, cands, min_snr=25.0):
    """(truth flux, measured flux, flux_err, dx, dy) for injected sources detected within 1.5 px."""
    out, missed = [], []
    for (x, y, s), f in zip(pair.real, pair.real_flux, strict=True):
        d = np.hypot(cands["x"] - x, cands["y"] - y) if len(cands) else np.array([np.inf])
        j = int(np.argmin(d))
        # matched-filter S/N of a Gaussian PSF: an upper bound (Moffat wings, template noise), so the bar is high
        expected_snr = f / (pair.info["sky_sigma"] * math.sqrt(4 * math.pi) * pair.info["fwhm_px"] / D.FWHM_SIGMA)
        ds = np.hypot(pair.stars_xy[:, 0] - x, pair.stars_xy[:, 1] - y)
        blended = np.any((ds < 3 * pair.info["fwhm_px"]) & (pair.info["star_flux"] > 0.3 * f))
        if d[j] < 1.5 and cands["flags"][j] == 0:
            if not blended:
                out.append((f, s * cands["flux"][j], cands["flux_err"][j], cands["x"][j] - x, cands["y"][j] - y))
        elif expected_snr > min_snr and 8 < x < 120 and 8 < y < 120 and not blended:
            missed.append((x, y, expected_snr))
    return np.array(out), missed


@pytest.fixture(scope="module")
def clean_runs():
    runs = []
    for i in range(4):
        pair = _pair(11, i)
        diff, cands, cutouts, res = D.difference_image(pair.science, pair.template,
                                                       saturation=pair.info["saturation"])
        runs.append((pair, diff, cands, cutouts, res))
    return runs


def test_injected_sources_recovered_with_flux_and_position(clean_runs):
    rows, missed = [], []
    for pair, _, cands, _, res in clean_runs:
        assert res.kernel_stars >= 3  # enough stars: a kernel fitted on them, not the FWHM-only fallback
        assert abs(res.kernel_sum - 1.0) < 0.05  # template and science zero-points agree
        m, miss = _matches(pair, cands)
        rows.append(m)
        missed += miss
    m = np.vstack(rows)
    bright = m[m[:, 1] / m[:, 2] > 20]
    ratio = bright[:, 1] / bright[:, 0]
    pull = (m[:, 1] - m[:, 0]) / m[:, 2]
    pos = np.hypot(bright[:, 3], bright[:, 4])
    assert len(bright) >= 25
    assert not missed, f"clearly detectable injected sources not detected: {missed}"
    assert abs(np.median(ratio) - 1.0) < 0.03
    assert np.mean(np.abs(ratio - 1.0) < 0.1) > 0.85
    assert np.sqrt(np.mean(pos**2)) < 0.35  # px
    # errors describe the scatter (blank-sky calibrated): robust rms of the pulls near 1
    assert 0.6 < 1.4826 * np.median(np.abs(pull - np.median(pull))) < 2.0


def test_candidates_table_and_cutouts_follow_the_contract(clean_runs):
    pair, diff, cands, cutouts, res = clean_runs[0]
    for col in ("x", "y", "ra", "dec", "flux", "flux_err", "snr", "a", "b", "theta", "fwhm"):
        assert col in cands.colnames
    assert np.all(np.abs(cands["snr"]) >= 5.0)
    n = len(cands)
    for k in ("science", "reference", "difference", "sigma"):
        assert cutouts[k].shape == (n, 31, 31)
    assert np.array_equal(cutouts["id"], np.asarray(cands["id"]))
    # the stamp centre is the candidate: a positive candidate peaks near the middle of its difference stamp
    i = int(np.argmax(cands["snr"]))
    st = cutouts["difference"][i]
    py, px = np.unravel_index(np.argmax(st), st.shape)
    assert abs(px - 15) <= 1 and abs(py - 15) <= 1
    # sky coordinates from the science WCS
    ra, dec = pair.science.wcs.wcs_pix2world(cands["x"], cands["y"], 0)
    assert np.allclose(ra, cands["ra"]) and np.allclose(dec, cands["dec"])
    # the difference image: science units, a variance plane, the NO_DATA mask where the template is missing
    assert diff.header["PHOTZP"] == pytest.approx(pair.science.header["PHOTZP"])
    assert diff.variance is not None and diff.mask is not None
    sig = np.sqrt(diff.variance[~res.bad])
    z = diff.data[~res.bad] / sig
    assert 0.7 < 1.4826 * np.median(np.abs(z)) < 1.5


def test_nothing_changed_gives_no_candidates():
    cond = Conditions(**{**CLEAN.__dict__, "real_per_frame": 0.0})
    for i in range(2):
        pair = _pair(23, i, cond)
        _, cands, _, res = D.difference_image(pair.science, pair.template, saturation=pair.info["saturation"])
        # only bright-star residuals may remain (their kernel is fitted, the residuals are tiny)
        assert len(cands) <= 2, cands


def test_template_resampling_conserves_flux():
    """A star rendered on a fine rotated template grid keeps its total flux on a coarser science grid."""
    shape_t, shape_s = (200, 200), (90, 90)
    wt = _tan_wcs(150.0, 2.0, 0.4, 33.0, False, shape_t)
    ws = _tan_wcs(150.0, 2.0, 0.9, 0.0, True, shape_s)
    ra, dec = ws.wcs_pix2world([44.3], [46.8], 0)
    tx, ty = wt.wcs_world2pix(ra, dec, 0)
    data = render_stars(shape_t, tx, ty, [1000.0], 3.0, 3.5)
    h = fits.Header()
    h.update(wt.to_header())
    h["PHOTZP"] = 25.0
    t = Image(data.astype(np.float32), h, np.zeros(shape_t, np.int32), np.full(shape_t, 0.01, np.float32))
    for method in ("exact", "interp"):
        out, var, bad = D.align_template(t, ws, shape_s, scale=2.0, resample=method)
        assert not bad[30:60, 30:60].any()
        assert out.sum() == pytest.approx(2000.0 * data.sum() / 1000.0, rel=0.01), method
        y, x = np.unravel_index(np.argmax(out), out.shape)
        assert abs(x - 44.3) < 1 and abs(y - 46.8) < 1
    # variance of a sum of ~5 input pixels: ~5 x theirs, times the scale squared
    assert np.median(var[~bad]) == pytest.approx(0.01 * (0.9 / 0.4) ** 2 * 4.0, rel=0.05)


def test_moffat_fit_recovers_the_psf():
    rng = np.random.default_rng(5)
    shape = (120, 120)
    xy = rng.uniform(15, 105, (6, 2))
    img = render_stars(shape, xy[:, 0], xy[:, 1], np.full(6, 2e4), 3.2, 3.0) + rng.normal(0, 2.0, shape)
    psf = D.fit_moffat(img, np.full(shape, 4.0), np.zeros(shape, bool), xy, 2.5)
    assert psf.fwhm == pytest.approx(3.2, rel=0.05)
    assert psf.beta == pytest.approx(3.0, abs=0.4)
    # analytic normalisation: the PSF stamp holds (almost) all the flux
    assert 0.95 < psf.stamp(15).sum() <= 1.0


def test_task_run_and_clear_errors():
    pair = _pair(11, 0)
    task = D.DiffimTask()
    out = task.run(pair.science, pair.template, data_id={"instrument": "sim", "exposure": 7})
    assert set(out) == {"diff", "sources", "cutouts"}
    meta = out["sources"].meta
    assert meta["exposure"] == 7 and meta["zp"] == pytest.approx(pair.science.header["PHOTZP"])
    assert meta["psf_fwhm"] > 0 and meta["pixel_scale_arcsec"] == pytest.approx(pair.info["pixel_scale"], rel=1e-3)
    no_zp = pair.science.copy()
    del no_zp.header["PHOTZP"]
    with pytest.raises(ValueError, match="exposure=7.*PHOTZP"):
        task.run(no_zp, pair.template, data_id={"instrument": "sim", "exposure": 7})
    # a template that does not overlap the frame: nothing to do, not a failure
    far = pair.template.copy()
    far.header["CRVAL1"] = far.header["CRVAL1"] + 1.0
    with pytest.raises(NoWorkFound, match="exposure=7"):
        task.run(pair.science, far, data_id={"instrument": "sim", "exposure": 7})


def test_masked_science_pixels_do_not_make_candidates():
    pair = _pair(11, 1)
    sci = pair.science.copy()
    sci.data[40:44, 60:64] = 60000.0  # a blob of bad pixels...
    sci.mask[40:44, 60:64] |= MASK_BITS["BAD"]  # ... flagged by calibrate
    _, cands, _, _ = D.difference_image(sci, pair.template, saturation=pair.info["saturation"])
    near = np.hypot(cands["x"] - 61.5, cands["y"] - 41.5) < 4
    assert not near.any()
