"""Reprojection onto the field grid (makeRefGrid, warp), checked against the demo survey's truth.

The calibrated frames (``calexp``, ``photoCalib``, ``wcsSolution``) are made from demo raws with the truth's
zero-point, seeing and WCS (``tests/truthdata.py``), standing in for the astrometry and photometry stages so
these tests exercise reprojection alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from truthdata import calexp_for, photo_calib_from_truth, truth_exposures, wcs_solution_from_truth

from openastro_parsl.datastore.image import MASK_BITS, Image
from openastro_parsl.pipeline.task import NoWorkFound
from openastro_parsl.tasks.image.reproject import (
    MakeRefGridTask,
    WarpTask,
    choose_reference,
    footprint_corners,
    grid_from_refgrid,
    warp_image,
)


def _inputs(demo, exps=None):
    exps = truth_exposures(demo) if exps is None else exps
    shapes = {k: v["shape"] for k, v in demo.truth["instruments"].items()}
    return ([photo_calib_from_truth(e, shapes[e["instrument"]]) for e in exps],
            [wcs_solution_from_truth(e) for e in exps], exps)


@pytest.fixture(scope="module")
def grid(demo):
    calibs, sols, _ = _inputs(demo)
    return MakeRefGridTask().run(calibs, sols)["ref_grid"]


def test_reference_is_the_finest_pixel_scale_with_the_best_seeing(demo, grid):
    lco = truth_exposures(demo, instrument="lco1m")
    best = min(lco, key=lambda e: e["seeing_fwhm_arcsec"])
    assert grid["reference"] == {"instrument": "lco1m", "exposure": best["exposure"]}
    assert grid["pixel_scale_arcsec"] == pytest.approx(0.39, rel=1e-6)
    assert grid["shape"] == demo.truth["instruments"]["lco1m"]["shape"]
    assert grid["fwhm_pix"] == pytest.approx(best["seeing_fwhm_px"])
    assert "smallest pixel scale" in grid["reason"] and "best seeing" in grid["reason"]
    w, shape = grid_from_refgrid(grid)  # the grid is the reference frame's pixel grid
    ra, dec = w.wcs_pix2world([0.0, 100.0], [0.0, 50.0], 0)
    from astropy.wcs import WCS

    x, y = WCS(fits.Header(best["wcs"])).wcs_world2pix(ra, dec, 0)
    np.testing.assert_allclose([x, y], [[0.0, 100.0], [0.0, 50.0]], atol=1e-6)


def test_choose_reference_rules():
    f = lambda inst, exp, scale, fwhm: {"instrument": inst, "exposure": exp,  # noqa: E731
                                        "pixel_scale_arcsec": scale, "fwhm_pix": fwhm}
    # the finest scale wins even with worse seeing
    i, _ = choose_reference([f("a", 1, 0.9, 2.0), f("b", 2, 0.4, 6.0)])
    assert i == 1
    # within the tolerance, the best seeing in arcsec wins; exact ties go to the lowest exposure
    i, reason = choose_reference([f("a", 1, 0.40, 4.0), f("a", 2, 0.404, 3.0), f("a", 3, 0.41, 1.0)])
    assert i == 1 and "within 2%" in reason
    assert choose_reference([f("a", 7, 0.4, 3.0), f("a", 5, 0.4, 3.0)])[0] == 1


def test_failed_solutions_are_skipped_and_none_left_is_no_work(demo, grid):
    calibs, sols, exps = _inputs(demo)
    ref = grid["reference"]
    is_ref = [(e["instrument"], e["exposure"]) == (ref["instrument"], ref["exposure"]) for e in exps]
    sols = [dict(s, status="wcs_failed", wcs={}) if r else s for s, r in zip(sols, is_ref, strict=True)]
    ids = {"wcs_solutions": [{"instrument": e["instrument"], "exposure": e["exposure"]} for e in exps]}
    other = MakeRefGridTask().run(calibs, sols, data_ids=ids)["ref_grid"]
    assert other["reference"]["instrument"] == "lco1m" and other["reference"]["exposure"] != ref["exposure"]
    assert other["n_candidates"] == len(exps) - 1
    with pytest.raises(NoWorkFound, match="field demo1"):
        MakeRefGridTask().run(calibs, [dict(s, status="wcs_failed") for s in sols], data_id={"field": "demo1"})


def test_union_grid_covers_every_frame(demo):
    calibs, sols, exps = _inputs(demo)
    cfg = MakeRefGridTask.Config(extent="union", margin_px=2)
    g = MakeRefGridTask(cfg).run(calibs, sols)["ref_grid"]
    w, (ny, nx) = grid_from_refgrid(g)
    assert ny > 256 and nx > 256 and g["pixel_scale_arcsec"] == pytest.approx(0.39, rel=1e-6)
    from astropy.wcs import WCS

    for e in exps:
        shape = demo.truth["instruments"][e["instrument"]]["shape"]
        c = footprint_corners(WCS(fits.Header(e["wcs"])), shape)
        x, y = w.wcs_world2pix(c[:, 0], c[:, 1], 0)
        assert x.min() >= -0.5 and y.min() >= -0.5 and x.max() <= nx - 0.5 and y.max() <= ny - 0.5


def _bright_isolated(image_wcs, shape, demo, margin, mag_max=16.5):
    s = demo.truth["stars"]
    ra, dec, r = (np.array([t[k] for t in s]) for k in ("ra", "dec", "r"))
    x, y = image_wcs.wcs_world2pix(ra, dec, 0)
    ok = (x > margin) & (x < shape[1] - 1 - margin) & (y > margin) & (y < shape[0] - 1 - margin) & (r < mag_max)
    keep = [i for i in np.flatnonzero(ok)
            if not np.any((np.hypot(x - x[i], y - y[i]) < 2 * margin) & (r < r[i] + 4) & (np.arange(len(r)) != i))]
    return ra[keep], dec[keep]


@pytest.mark.parametrize("instrument,method", [("slt40", "interp"), ("ota80", "interp"), ("ota80", "exact"),
                                               ("slt40", "adaptive")])
def test_warp_preserves_positions_and_flux(demo, grid, instrument, method):
    """Stars land where the grid WCS says (< 0.1 input pixel) and keep their flux (exact: 0.1%, else 1%)."""
    from photutils.aperture import CircularAperture, aperture_photometry
    from photutils.centroids import centroid_2dg, centroid_sources

    e = truth_exposures(demo, instrument=instrument, band="r")[0]
    cal = calexp_for(demo, e)
    cfg = WarpTask.Config(method=method)
    warped = WarpTask(cfg).run(cal, grid, data_id={"instrument": instrument, "exposure": e["exposure"]})["warped"]
    w, shape = grid_from_refgrid(grid)
    assert warped.shape == tuple(shape) and warped.header["WARPMETH"] == method
    area = warped.header["WARPAREA"]
    assert area == pytest.approx((0.39 / demo.truth["instruments"][instrument]["pixel_scale"]) ** 2, rel=1e-3)
    fw = warped.header["FWHMGRID"]
    ra, dec = _bright_isolated(w, shape, demo, margin=4 * fw)
    assert len(ra) >= 2
    x, y = w.wcs_world2pix(ra, dec, 0)
    sky = float(np.median(cal.data))
    d = np.nan_to_num(warped.data - sky * area)
    box = int(2 * round(1.5 * fw)) + 1
    cx, cy = centroid_sources(d, x, y, box_size=box, centroid_func=centroid_2dg)
    off_input_px = np.hypot(cx - x, cy - y) * np.sqrt(area)
    assert np.all(off_input_px < 0.1), off_input_px
    x0, y0 = cal.wcs.wcs_world2pix(ra, dec, 0)
    f0 = aperture_photometry(cal.data - sky, CircularAperture(np.column_stack([x0, y0]), 4 * e["seeing_fwhm_px"]))
    f1 = aperture_photometry(d, CircularAperture(np.column_stack([x, y]), 4 * fw))
    ratio = np.asarray(f1["aperture_sum"]) / np.asarray(f0["aperture_sum"])
    np.testing.assert_allclose(ratio, 1.0, atol=0.001 if method == "exact" else 0.01)
    # the variance plane follows: sky variance per grid pixel = input sky variance x area^2
    assert np.nanmedian(warped.variance) == pytest.approx(np.median(cal.variance) * area**2, rel=0.05)


def test_warp_flags_outside_footprint_and_carries_mask_bits(demo, grid):
    e = truth_exposures(demo, instrument="slt40", band="r")[0]
    cal = calexp_for(demo, e)
    w_in = cal.wcs
    w_in.wcs.crval = [w_in.wcs.crval[0] + 30 / 3600.0, w_in.wcs.crval[1]]  # move the frame 30 arcsec east
    cal.set_wcs(w_in)
    w, shape = grid_from_refgrid(grid)
    sx, sy = (int(round(float(v))) for v in w_in.wcs_world2pix(*w.wcs_pix2world(128, 128, 0), 0))
    cal.mask[sy:sy + 4, sx:sx + 4] |= MASK_BITS["SAT"]  # a saturated 4x4 block that lands on the grid
    cal.variance[sy + 10:sy + 12, sx:sx + 2] = np.inf  # pixels calibrate gave up on
    warped = warp_image(cal, w, shape)
    ny, nx = cal.shape
    # where each grid pixel centre falls on the input frame
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    ix, iy = w_in.wcs_world2pix(*w.wcs_pix2world(xx, yy, 0), 0)
    outside = (ix < -0.5) | (ix > nx - 0.5) | (iy < -0.5) | (iy > ny - 0.5)
    inside = (ix > 0.5) & (ix < nx - 1.5) & (iy > 0.5) & (iy < ny - 1.5)
    nodata = (warped.mask & MASK_BITS["NO_DATA"]) != 0
    assert outside.sum() > 1000 and inside.sum() > 1000
    assert nodata[outside].all() and not nodata[inside].any()
    assert np.isnan(warped.data[nodata]).all() and np.isfinite(warped.data[~nodata]).all()
    assert warped.header["COVERFRC"] == pytest.approx(1 - nodata.mean())
    sat = (warped.mask & MASK_BITS["SAT"]) != 0
    hit = (ix > sx - 0.5) & (ix < sx + 3.5) & (iy > sy - 0.5) & (iy < sy + 3.5)
    assert sat[hit].all() and sat.sum() < 4 * hit.sum()
    bad = (warped.mask & MASK_BITS["BAD"]) != 0
    gave_up = (ix > sx - 0.5) & (ix < sx + 1.5) & (iy > sy + 9.5) & (iy < sy + 11.5)
    assert bad[gave_up].all() and not nodata[gave_up].any() and np.isfinite(warped.variance[gave_up]).all()


def test_warp_task_errors_and_no_overlap(demo, grid):
    e = truth_exposures(demo, instrument="lco1m", band="g")[0]
    cal = calexp_for(demo, e)
    did = {"instrument": "lco1m", "exposure": e["exposure"]}
    far = cal.copy()
    w_in = far.wcs
    w_in.wcs.crval = [w_in.wcs.crval[0] + 1.0, w_in.wcs.crval[1]]
    far.set_wcs(w_in)
    with pytest.raises(NoWorkFound, match="does not overlap"):
        WarpTask().run(far, grid, data_id=did)
    bare = Image(cal.data, fits.Header({"INSTRUME": "lco1m"}), cal.mask, cal.variance)
    with pytest.raises(ValueError, match=f"exposure={e['exposure']}.*no WCS"):
        WarpTask().run(bare, grid, data_id=did)
