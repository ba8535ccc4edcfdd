"""Normalisation and co-addition (normalize, coadd) on demo frames, checked against the survey's truth, plus the
co-add kernel's tiling: memory cap respected, tiled result equal to the whole-image one."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats
from photutils.aperture import CircularAperture, aperture_photometry
from truthdata import adu_zero_point, calexp_for, photo_calib_from_truth, truth_exposures, wcs_solution_from_truth

from openastro_parsl.datastore.image import MASK_BITS, Image
from openastro_parsl.pipeline.task import NoWorkFound
from openastro_parsl.tasks.image import (
    CoaddTask,
    MakeRefGridTask,
    NormalizeTask,
    NpyFrame,
    WarpTask,
    fits_frame,
    flux_scale,
    save_npy_frame,
)
from openastro_parsl.tasks.image.coadd_kernel import coadd

N_SLT40 = 24  # of the 98 slt40 r frames, enough for the sqrt(N) test and quick
N_LCO1M = 4


def _key(e):
    return e["instrument"], e["exposure"]


def _ids(exps):
    return {"frames": [{"instrument": e["instrument"], "exposure": e["exposure"]} for e in exps]}


@pytest.fixture(scope="module")
def field(demo):
    """The demo1 grid and r-band frames of all three instruments, warped and normalised by the tasks."""
    every = truth_exposures(demo)
    shapes = {k: v["shape"] for k, v in demo.truth["instruments"].items()}
    grid = MakeRefGridTask().run([photo_calib_from_truth(e, shapes[e["instrument"]]) for e in every],
                                 [wcs_solution_from_truth(e) for e in every])["ref_grid"]
    exps = (truth_exposures(demo, instrument="lco1m", band="r")[:N_LCO1M]
            + truth_exposures(demo, instrument="ota80", band="r")
            + truth_exposures(demo, instrument="slt40", band="r")[:N_SLT40])
    calexps = {_key(e): calexp_for(demo, e) for e in exps}
    warped = {k: WarpTask().run(c, grid)["warped"] for k, c in calexps.items()}
    norm = {_key(e): NormalizeTask().run(warped[_key(e)], photo_calib_from_truth(e, shapes[e["instrument"]]))["norm"]
            for e in exps}
    return {"grid": grid, "exps": exps, "calexps": calexps, "warped": warped, "norm": norm}


def _stars(demo, band):
    s = demo.truth["stars"]
    return (np.array([t["ra"] for t in s]), np.array([t["dec"] for t in s]), np.array([t[band] for t in s]),
            np.array([t["g"] - t["r"] for t in s]), np.array([t["target"] is None for t in s]))


def _isolated_bright(image, demo, band, radius, mag_max=16.0, clear=None):
    """Grid positions and truth of non-variable stars brighter than mag_max, fully inside the grid, with no star
    brighter than theirs + 4 mag within ``clear`` pixels (default 2.5 apertures)."""
    clear = 2.5 * radius if clear is None else clear
    ra, dec, mag, gr, constant = _stars(demo, band)
    x, y = image.wcs.wcs_world2pix(ra, dec, 0)
    ny, nx = image.shape
    pick = []
    for i in np.flatnonzero((mag < mag_max) & constant):
        if not (radius < x[i] < nx - 1 - radius and radius < y[i] < ny - 1 - radius):
            continue
        d = np.hypot(x - x[i], y - y[i])
        if np.any((d > 0) & (d < clear) & (mag < mag[i] + 4.0)):
            continue
        pick.append(i)
    pick = np.array(pick, int)
    return x[pick], y[pick], mag[pick], gr[pick]


def _mags(image, x, y, radius):
    ap = CircularAperture(np.column_stack([x, y]), radius)
    flux = np.asarray(aperture_photometry(np.nan_to_num(image.data), ap)["aperture_sum"])
    return image.header["PHOTZP"] - 2.5 * np.log10(flux)


def test_normalize_subtracts_sky_and_scales_to_target_zp(demo, field):
    e = truth_exposures(demo, instrument="lco1m", band="r")[0]
    warped, norm = field["warped"][_key(e)], field["norm"][_key(e)]
    zp = adu_zero_point(e)
    f = flux_scale(zp, 25.0)
    assert norm.header["PHOTZP"] == 25.0 and norm.header["FLXSCALE"] == pytest.approx(f)
    assert norm.header["MJD-MID"] == pytest.approx(e["mjd"])
    ok = (norm.mask & MASK_BITS["NO_DATA"]) == 0
    np.testing.assert_allclose(norm.variance[ok], warped.variance[ok] * f * f, rtol=1e-5)
    # the sky is gone: the sigma-clipped median of the frame is ~0 (to 5% of its noise), the true sky was large
    _, med, std = sigma_clipped_stats(norm.data[ok], sigma=3.0)
    assert abs(med) < 0.05 * std
    assert norm.header["BKGMEAN"] == pytest.approx(e["sky_e_per_px"] / e["gain"], rel=0.03)
    # stars now read mag = 25 - 2.5 log10(flux) (+ the instrument's colour term)
    r = 4 * norm.header["FWHMGRID"]
    x, y, mag, gr = _isolated_bright(norm, demo, "r", r)
    assert len(x) >= 3
    np.testing.assert_allclose(_mags(norm, x, y, r), mag + e["colour_term"] * gr, atol=0.02)


def test_normalize_zero_point_comes_from_the_pixels_header(demo, field, caplog):
    e = truth_exposures(demo, instrument="ota80", band="r")[0]
    warped = field["warped"][_key(e)]
    calib = photo_calib_from_truth(e, (1, 1))  # zp per e-/s: PHOTZP = zp + 2.5 log10(EXPTIME / GAIN)
    with caplog.at_level("WARNING"):
        NormalizeTask().run(warped, calib)
    assert "PHOTZP" not in caplog.text
    with caplog.at_level("WARNING"):
        NormalizeTask().run(warped, dict(calib, zp=calib["zp"] + 0.2))
    assert "PHOTZP" in caplog.text
    bare = warped.copy()
    del bare.header["PHOTZP"]
    with pytest.raises(ValueError, match="exposure=7.*no pixel zero-point"):
        NormalizeTask().run(bare, calib, data_id={"instrument": "ota80", "exposure": 7})
    out = NormalizeTask().run(bare, dict(calib, zp_adu=adu_zero_point(e)))["norm"]
    assert out.header["FLXSCALE"] == pytest.approx(flux_scale(adu_zero_point(e), 25.0))


def test_coadd_of_one_instrument_reproduces_catalogue_magnitudes(demo, field):
    exps = [e for e in field["exps"] if e["instrument"] == "lco1m"]
    out = CoaddTask().run([field["norm"][_key(e)] for e in exps], data_ids=_ids(exps))
    co = out["coadd"]
    assert co.header["NFRAMES"] == len(exps) == N_LCO1M and co.header["PHOTZP"] == 25.0
    assert co.header["MJDMIN"] == pytest.approx(min(e["mjd"] for e in exps))
    assert co.header["MJDMAX"] == pytest.approx(max(e["mjd"] for e in exps))
    assert co.header["INP0001"] == f"lco1m/{exps[0]['exposure']}"
    r = 4 * max(field["norm"][_key(e)].header["FWHMGRID"] for e in exps)
    x, y, mag, gr = _isolated_bright(co, demo, "r", r)
    assert len(x) >= 3
    diff = _mags(co, x, y, r) - (mag + exps[0]["colour_term"] * gr)
    assert np.all(np.abs(diff) < 0.02), diff
    cov = out["coverage"].data
    assert cov.max() == N_LCO1M and np.median(cov) == N_LCO1M


def _moffat_ee(r, fwhm, beta):
    """Fraction of a Moffat profile's flux within radius r."""
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return 1.0 - (1.0 + (r / alpha) ** 2) ** (1.0 - beta)


def test_heterogeneous_coadd_flux_matches_truth(demo, field):
    """lco1m + ota80 + slt40 r frames (0.39 to 1.9 arcsec/px, seeing 1.2 to 4 arcsec) in one stack: frame i
    holds a star of flux 10**(-0.4 (m + CT_i (g-r) - 25)), with a fraction EE_i of it (its Moffat PSF, from the
    truth) in the aperture, so the co-add's aperture flux is the weighted mean of those."""
    exps = field["exps"]
    norms = [field["norm"][_key(e)] for e in exps]
    out = CoaddTask().run(norms, data_ids=_ids(exps))
    co = out["coadd"]
    n = len(exps)
    assert co.header["NFRAMES"] == n
    w = np.array([co.header[f"WGT{i + 1:04d}"] for i in range(n)])
    assert w.sum() == pytest.approx(1.0)
    ct = np.array([e["colour_term"] for e in exps])
    fwhm = np.array([f.header["FWHMGRID"] for f in norms])
    r = 2.5 * fwhm.max()
    ee = _moffat_ee(r, fwhm, np.array([e["psf"]["beta"] for e in exps]))
    x, y, mag, gr = _isolated_bright(co, demo, "r", r, mag_max=17.0, clear=r + 2 * fwhm.max())
    assert len(x) >= 2
    pred = np.array([m - 2.5 * np.log10(np.sum(w * ee * 10 ** (-0.4 * ct * c))) for m, c in zip(mag, gr, strict=True)])
    diff = _mags(co, x, y, r) - pred
    assert np.all(np.abs(diff) < 0.02), diff


def _sky_pixels(image, demo, band, grow=4.0):
    """Pixels far from every star brighter than 21 mag (by truth), where the co-add is all frames deep."""
    ra, dec, mag, _, _ = _stars(demo, band)
    x, y = image.wcs.wcs_world2pix(ra, dec, 0)
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    far = np.ones(image.shape, bool)
    for i in np.flatnonzero(mag < 21.0):
        rad = grow * (1.0 + 0.8 * max(0.0, 19.0 - mag[i])) * 3.0
        far &= (xx - x[i]) ** 2 + (yy - y[i]) ** 2 > rad * rad
    return far


def test_coadd_noise_scales_as_one_over_sqrt_n(demo, field):
    exps = truth_exposures(demo, instrument="slt40", band="r")[:N_SLT40]
    frames = [field["norm"][_key(e)] for e in exps]
    out = CoaddTask().run(frames, data_ids=_ids(exps))
    co = out["coadd"]
    sky = _sky_pixels(co, demo, "r") & (out["coverage"].data == len(frames))
    assert sky.sum() > 5000
    single = np.array([sigma_clipped_stats(f.data[sky], sigma=4.0)[2] for f in frames])
    w = np.array([co.header[f"WGT{i + 1:04d}"] for i in range(len(frames))])
    predicted = np.sqrt(np.sum(w**2 * single**2)) / np.sum(w)
    measured = sigma_clipped_stats(co.data[sky], sigma=4.0)[2]
    assert measured == pytest.approx(predicted, rel=0.08)
    assert measured == pytest.approx(np.median(single) / np.sqrt(len(frames)), rel=0.15)
    # the uncertainty map follows the inputs' variance planes: 1/sum(w) for inverse-variance weights
    inv = np.sum([1.0 / np.nanmedian(f.variance[sky]) for f in frames])
    assert np.median(co.variance[sky]) == pytest.approx(1.0 / inv, rel=0.05)


def test_sigma_clipping_removes_cosmic_ray_and_satellite_trail(demo, field):
    exps = [e for e in field["exps"] if e["instrument"] == "lco1m"]
    grid = field["grid"]
    hit = exps[1]
    cal = field["calexps"][_key(hit)].copy()
    ny, nx = cal.shape
    sky_rms = float(np.sqrt(np.median(cal.variance)))
    yy, xx = np.mgrid[:ny, :nx]
    trail = np.abs((yy - 40.0) - 0.6 * (xx - 10.0)) / np.hypot(1.0, 0.6) < 1.5  # 3 px wide line
    cal.data[trail] += 15.0 * sky_rms
    # a cosmic ray (3x3 px) on empty sky, chosen by the truth catalogue
    sky = _sky_pixels(field["norm"][_key(hit)], demo, "r")
    sky[:20], sky[-20:], sky[:, :20], sky[:, -20:] = False, False, False, False
    gy, gx = np.argwhere(sky)[len(np.argwhere(sky)) // 2]
    radec = field["norm"][_key(hit)].wcs.wcs_pix2world(gx, gy, 0)
    cx, cy = (int(round(float(v))) for v in cal.wcs.wcs_world2pix(*radec, 0))
    cal.data[cy - 1:cy + 2, cx - 1:cx + 2] += 4000.0
    bad = NormalizeTask().run(WarpTask().run(cal, grid)["warped"], photo_calib_from_truth(hit, (ny, nx)))["norm"]
    clean = [field["norm"][_key(e)] for e in exps]
    dirty = [bad if e is hit else field["norm"][_key(e)] for e in exps]
    run = lambda frames, **cfg: CoaddTask(CoaddTask.Config(**cfg)).run(frames, data_ids=_ids(exps))  # noqa: E731
    ref, got, unclipped = run(clean), run(dirty), run(dirty, clip_sigma=0)
    on_trail = (WarpTask().run(Image(trail.astype(np.float32), cal.header, None, np.ones_like(cal.data)),
                               grid)["warped"].data > 0.5)
    sigma = np.sqrt(np.nanmedian(ref["coadd"].variance))
    leak = unclipped["coadd"].data - ref["coadd"].data
    left = got["coadd"].data - ref["coadd"].data
    assert np.nanmean(leak[on_trail]) > 3 * sigma  # without clipping the trail is plain to see
    assert abs(np.nanmean(left[on_trail])) < 0.1 * np.nanmean(leak[on_trail])
    i, j = gy, gx
    assert leak[i, j] > 100 * sigma
    assert abs(left[i, j]) < 3 * sigma
    assert got["coverage"].data[i, j] == len(exps) - 1
    assert np.median(got["coverage"].data[on_trail]) == len(exps) - 1
    assert got["coadd"].header["NCLIPPED"] > ref["coadd"].header["NCLIPPED"]


def test_epoch_range_selects_frames_for_a_template(demo, field):
    exps = field["exps"]
    frames = [field["norm"][_key(e)] for e in exps]
    mjds = sorted(e["mjd"] for e in exps)
    cut = mjds[len(mjds) // 2]
    out = CoaddTask(CoaddTask.Config(mjd_max=cut)).run(frames, data_ids=_ids(exps))
    h = out["coadd"].header
    assert h["NFRAMES"] == sum(m <= cut for m in mjds) and h["MJDMAX"] <= cut
    with pytest.raises(NoWorkFound, match="MJD-MID"):
        CoaddTask(CoaddTask.Config(mjd_min=mjds[-1] + 1)).run(frames, data_ids=_ids(exps))


def test_coadd_refuses_frames_off_the_grid_or_zero_point(field):
    a, b = list(field["norm"].values())[:2]
    small = Image(a.data[:10, :10], a.header, a.mask[:10, :10], a.variance[:10, :10])
    with pytest.raises(ValueError, match="not on one grid"):
        CoaddTask().run([a, small])
    other = b.copy()
    other.header["PHOTZP"] = 24.0
    with pytest.raises(ValueError, match="zero-points"):
        CoaddTask().run([a, other])


# --------------------------------------------------------------------------------------------------------------
# Kernel: tiling and the memory cap
# --------------------------------------------------------------------------------------------------------------

def _synthetic_frames(n, shape, seed=3):
    """Sky noise with a few stars, different noise per frame, NO_DATA corners, one frame with a hot block."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    stars = sum(a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0)
                for a, x, y in zip(rng.uniform(50, 500, 8), rng.uniform(0, nx, 8), rng.uniform(0, ny, 8), strict=True))
    frames = []
    for i in range(n):
        s = rng.uniform(1.0, 3.0)
        data = (stars + rng.normal(0, s, shape)).astype(np.float32)
        mask = np.zeros(shape, np.int32)
        mask[: i % 7, : (3 * i) % 11] = MASK_BITS["NO_DATA"]
        data[mask > 0] = np.nan
        if i == 2:
            data[10:14, 20:30] += 1e4
        frames.append(Image(data, None, mask, np.full(shape, s * s, np.float32)))
    return frames


def test_tiled_coadd_equals_in_memory_coadd(tmp_path):
    frames = _synthetic_frames(12, (96, 80))
    whole = coadd(frames, tile_shape=(96, 80))
    lazy = [save_npy_frame(f, tmp_path / f"f{i}") for i, f in enumerate(frames)]
    from openastro_parsl.datastore.formatters import formatter_named

    for i, f in enumerate(frames):
        formatter_named("fits-image").write(f, tmp_path / f"f{i}.fits")
    on_disk = [fits_frame(tmp_path / f"f{i}.fits") for i in range(len(frames))]
    for tiles, source in [((7, 80), lazy), ((1, 40), lazy), ((10, 80), on_disk)]:
        part = coadd(source, tile_shape=tiles)
        assert part.n_tiles > 1
        np.testing.assert_allclose(part.image, whole.image, rtol=1e-6, atol=0, equal_nan=True)
        np.testing.assert_allclose(part.variance, whole.variance, rtol=1e-6, atol=0, equal_nan=True)
        np.testing.assert_array_equal(part.coverage, whole.coverage)
        assert part.n_clipped == whole.n_clipped
    assert whole.n_clipped >= 40  # the hot block of frame 2
    assert np.all(whole.coverage[10:14, 20:30] <= 11)


def test_memory_cap_bounds_the_kernel_whatever_the_number_of_frames(tmp_path):
    shape, cap_mb = (256, 256), 6.0
    frames = _synthetic_frames(40, shape, seed=5)
    lazy = [save_npy_frame(f, tmp_path / f"f{i}") for i, f in enumerate(frames)]
    del frames
    tracemalloc.start()
    try:
        res = coadd(lazy, memory_cap_mb=cap_mb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stack_mb = 40 * shape[0] * shape[1] * 4 * 3 / 2**20  # data + variance + mask, float32/int32
    assert res.n_tiles > 1 and stack_mb > 4 * cap_mb
    assert peak / 2**20 < cap_mb, f"traced peak {peak / 2**20:.1f} MB over the {cap_mb} MB cap"
    ref = coadd([NpyFrame.open(tmp_path / f"f{i}") for i in range(40)], memory_cap_mb=1024)
    np.testing.assert_allclose(res.image, ref.image, rtol=1e-6, equal_nan=True)


def test_memory_cap_too_small_is_a_clear_error():
    frames = _synthetic_frames(3, (64, 64))
    with pytest.raises(MemoryError, match="memory_cap_mb"):
        coadd(frames, memory_cap_mb=0.01)


# --------------------------------------------------------------------------------------------------------------
# Through the planner and Parsl: the four tasks as a pipeline, and the template variant of coadd
# --------------------------------------------------------------------------------------------------------------

PIPELINE = """
description: reprojection, normalisation and co-addition (tests)
tasks:
  makeRefGrid: openastro_parsl.tasks.image.MakeRefGridTask
  warp: openastro_parsl.tasks.image.WarpTask
  normalize: openastro_parsl.tasks.image.NormalizeTask
  coadd: openastro_parsl.tasks.image.CoaddTask
  templateCoadd:
    class: openastro_parsl.tasks.image.CoaddTask
    config:
      mjd_max: {mjd_max}
      connections: {{coadd: templateCoadd, coverage: templateCoverage}}
"""


def test_pipeline_plans_and_runs_through_parsl(demo, tmp_path):
    from openastro_parsl.execution.site import load_site
    from openastro_parsl.execution.submit import Submission
    from openastro_parsl.graph.planner import Planner
    from openastro_parsl.pipeline.pipeline import load_pipeline
    from openastro_parsl.registry.refs import DatasetType

    butler = demo.butler
    exps = truth_exposures(demo, instrument="lco1m")
    run = "u/test/coadd-inputs"
    if not butler.registry.query_collections(run):
        shapes = demo.truth["instruments"]["lco1m"]["shape"]
        for e in exps:
            did = {"instrument": "lco1m", "exposure": e["exposure"]}
            butler.put(calexp_for(demo, e), DatasetType("calexp", ("instrument", "exposure"), "Image"), did, run=run)
            butler.put(photo_calib_from_truth(e, shapes),
                       DatasetType("photoCalib", ("instrument", "exposure"), "StructuredData"), did, run=run)
            butler.put(wcs_solution_from_truth(e),
                       DatasetType("wcsSolution", ("instrument", "exposure"), "StructuredData"), did, run=run)
    r_mjd = sorted(e["mjd"] for e in exps if e["band"] == "r")
    spec = tmp_path / "coadd.yaml"
    spec.write_text(PIPELINE.format(mjd_max=(r_mjd[1] + r_mjd[2]) / 2))
    graph = Planner(butler, load_pipeline(spec), inputs=[run], output_run="u/test/coadd",
                    where="instrument = 'lco1m'").plan()
    counts = graph.counts_by_task()
    n_lco = sum(1 for e in demo.truth["exposures"] if e["instrument"] == "lco1m")
    assert counts == {"makeRefGrid": 1, "warp": n_lco, "normalize": n_lco, "coadd": 2, "templateCoadd": 2}
    site, src = load_site(None)
    assert Submission.start(butler, graph, site, src).run().ok
    grid = butler.get("refGrid", {"field": "demo1"}, collections="u/test/coadd")
    assert grid["reference"]["instrument"] == "lco1m"
    for band in ("g", "r"):
        co = butler.get("coadd", {"field": "demo1", "band": band}, collections="u/test/coadd")
        assert co.header["NFRAMES"] == n_lco // 2 and co.variance is not None and co.wcs is not None
        cov = butler.get("coaddCoverage", {"field": "demo1", "band": band}, collections="u/test/coadd")
        assert cov.data.max() == n_lco // 2
    tpl = butler.get("templateCoadd", {"field": "demo1", "band": "r"}, collections="u/test/coadd")
    assert tpl.header["NFRAMES"] == 2 and tpl.header["MJDMAX"] <= r_mjd[1] + 1e-9
