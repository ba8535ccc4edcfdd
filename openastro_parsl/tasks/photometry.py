"""Photometric calibration: sep extraction, catalogue cross-match, sigma-clipped zero-point + colour term.

The zero-point follows the survey's photometric model (``truth.json`` ``photometry_model``):

    counts_e = exptime * 10**(-0.4 * (m + colour_term * (g - r) - zp))

so ``zp`` is the magnitude of a star of colour g-r = 0 that gives 1 e-/s through this frame's atmosphere,
comparable between cameras with different gains and exposure times. ``zp_adu`` = zp + 2.5 log10(exptime /
gain) is the same calibration for the frame's own pixel values (mag = zp_adu - 2.5 log10(flux_ADU) - CT (g-r));
it is what the calexp header's ``PHOTZP`` holds, because a header describes its own pixels.

The src table's ``mag`` is in the instrument's natural system, ``zp - 2.5 log10(flux_e / exptime)`` (no colour
term; ``mag_err`` the measurement error alone), so a light curve applies the colour term with its target's own
catalogue colour and adds ``zp_err`` once. ``mag_cal = mag - colour_term * colour`` is the standard magnitude
with the matched catalogue colour (the calibrators' median colour for unmatched sources, flagged NO_COLOUR),
``mag_cal_err`` including ``zp_err``.

Kernels are plain functions (testable on any array); ``CalibrateTask`` and ``ZeropointHistoryTask`` are thin
wrappers that read the observation info from the header, call them, and package the outputs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning
from pydantic import Field

from ..datastore.image import MASK_BITS, Image
from ..pipeline.connections import Connections, Input, Output, PrerequisiteInput
from ..pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig
from .observation import ObservationInfo, observation_info

# Per-source flags (the src table's ``flags`` column).
SOURCE_FLAGS = {
    # bits 1-128 make a source unfit for calibration
    "SATURATED": 1,      # a pixel of the footprint reached the saturation level
    "EDGE": 2,           # footprint or aperture touches the image edge / the EDGE-masked border
    "MASKED": 4,         # the aperture holds BAD / NO_DATA pixels
    "BAD_FLUX": 8,       # non-positive or non-finite aperture flux
    "REF_CROWDED": 16,   # its catalogue star has a neighbour bright enough to bias the aperture
    "REF_VARIABLE": 32,  # its catalogue star is a known variable (refcat ``variable``)
    # information
    "BLENDED": 256,      # sep deblended it from a merged detection (the aperture may still be clean)
    "NO_COLOUR": 512,    # unmatched: mag_cal assumes the calibrators' median colour
    "CALIB_USED": 1024,  # used in the zero-point fit
    "CALIB_CLIPPED": 2048,  # matched and eligible, rejected by sigma clipping
}
_UNFIT = 255
MAG_PER_FRAC = 2.5 / np.log(10.0)  # mag error per fractional flux error


def wcs_from_cards(cards: dict) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(fits.Header(cards), naxis=2)


def solution_wcs(raw: Image, solution: dict, where: str = "") -> tuple[WCS, str]:
    """The WCS a frame is calibrated with, from its ``wcsSolution``; ``NoWorkFound`` when it failed to solve."""
    prefix = f"{where}: " if where else ""
    status = (solution or {}).get("status")
    if status == "wcs_failed":
        raise NoWorkFound(f"{prefix}plate solve failed: {solution.get('reason') or 'no reason given'}")
    cards = solution.get("wcs") or {}
    if cards:
        wcs = wcs_from_cards(cards)
    elif status == "header":
        wcs = raw.wcs
    else:
        wcs = None
    if status not in ("header", "solved") or wcs is None or not wcs.has_celestial:
        raise ValueError(f"{prefix}wcsSolution has status {status!r} and no usable WCS cards")
    return wcs, status


# ----------------------------------------------------------------------------------------------------------
# Pixel-level: background, variance, mask


@dataclass
class Planes:
    """Background-subtracted pixels with what sep measured about the sky."""

    sub: np.ndarray  # data - background (ADU)
    background: np.ndarray  # ADU
    sky_var: np.ndarray  # ADU^2: read noise + sky Poisson (what detection and apertures see as noise)
    variance: np.ndarray  # ADU^2: sky_var + source Poisson (the calexp VARIANCE plane)
    mask: np.ndarray  # int32 MASK_BITS
    global_back: float
    global_rms: float
    constant_noise: bool = False  # sky_var is global_rms**2 everywhere


def make_planes(data: np.ndarray, *, gain: float | None, read_noise: float | None, saturation: float | None,
                edge_px: int = 2, box: int = 64, filter_size: int = 3, source_mask: np.ndarray | None = None,
                constant_noise: bool = False) -> Planes:
    """sep background (sources masked when ``source_mask`` is given), variance and mask planes.

    Variance = read noise^2 + Poisson(sky) + Poisson(source) in ADU^2. The sky's Poisson part is *measured*
    (sep's background rms, floored at the read noise) rather than modelled from the sky level, because an
    unrecorded bias pedestal (the MaxIm-DL frames' 100 ADU) would otherwise inflate it; the source's Poisson
    part is the background-subtracted signal divided by the gain (left out when ``gain`` is None).
    ``constant_noise`` uses the global rms everywhere, as SExtractor does without a weight map. Pixels with no
    data get NaN variance and the BAD | NO_DATA mask bits.
    """
    import sep

    data = np.ascontiguousarray(data, dtype=np.float64)
    mask = np.zeros(data.shape, dtype=np.int32)
    bad = ~np.isfinite(data)
    mask[bad] |= MASK_BITS["BAD"] | MASK_BITS["NO_DATA"]
    if saturation is not None:
        mask[np.where(bad, False, data >= saturation)] |= MASK_BITS["SAT"]
    if edge_px > 0:
        edge = np.zeros(data.shape, dtype=bool)
        edge[:edge_px, :] = edge[-edge_px:, :] = edge[:, :edge_px] = edge[:, -edge_px:] = True
        mask[edge] |= MASK_BITS["EDGE"]
    clean = np.where(bad, 0.0, data)
    bmask = (mask & (MASK_BITS["BAD"] | MASK_BITS["SAT"])) != 0
    if source_mask is not None:
        bmask = bmask | source_mask
    ny, nx = data.shape
    bw, bh = min(box, nx), min(box, ny)
    bkg = sep.Background(clean, mask=bmask, bw=bw, bh=bh, fw=filter_size, fh=filter_size)
    back = bkg.back()
    read_var = (read_noise / gain) ** 2 if (read_noise and gain) else 0.0
    rms2 = np.full(data.shape, bkg.globalrms ** 2) if constant_noise else bkg.rms() ** 2
    sky_var = np.maximum(rms2, read_var)
    sub = clean - back
    variance = sky_var + (np.clip(sub, 0.0, None) / gain if gain else 0.0)
    variance[bad] = np.nan
    return Planes(sub, back, sky_var, variance, mask, float(bkg.globalback), float(bkg.globalrms), constant_noise)


# ----------------------------------------------------------------------------------------------------------
# Sources


def detect(planes: Planes, *, thresh: float = 3.0, minarea: int = 5, deblend_cont: float = 0.005):
    """sep detections (structured array) and the segmentation map, thresholds in units of the sky noise."""
    import sep

    bad = (planes.mask & (MASK_BITS["BAD"] | MASK_BITS["NO_DATA"])) != 0
    # a constant noise goes in as a scalar: sep's matched filter would otherwise treat the noise map's edge
    noise = {"err": float(np.sqrt(planes.sky_var.flat[0]))} if planes.constant_noise else {"var": planes.sky_var}
    objs, seg = sep.extract(planes.sub, thresh, mask=bad if bad.any() else None, minarea=minarea,
                            deblend_cont=deblend_cont, segmentation_map=True, **noise)
    return objs, seg


def _sub_offsets(n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) / n - 0.5


def moffat_pixels(dx: np.ndarray, dy: np.ndarray, fwhm: float, beta: float, sub: int | None = None) -> np.ndarray:
    """A unit-flux circular Moffat integrated over pixels whose centres sit at offsets (dx, dy) from its centre.

    Integrating (not sampling) matters on undersampled frames (FWHM ~2 px), where a sampled model would read
    the FWHM several per cent too wide; ``sub`` x ``sub`` samples per pixel (default: 5 below 2.5 px FWHM, 3
    below 5 px, else 1).
    """
    if sub is None:
        sub = 5 if fwhm < 2.5 else 3 if fwhm < 5.0 else 1
    off = _sub_offsets(sub)
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    u = dx[..., None, None] + off[None, :, None]
    v = dy[..., None, None] + off[None, None, :]
    prof = (beta - 1.0) / (np.pi * alpha ** 2) * (1.0 + (u ** 2 + v ** 2) / alpha ** 2) ** (-beta)
    return prof.mean(axis=(-1, -2))


def fit_moffat(sub: np.ndarray, var: np.ndarray, x: float, y: float, *, fwhm_guess: float,
               beta: float | None = None, half: int | None = None) -> tuple[float, float, float, bool]:
    """Least-squares fit of a pixel-integrated Moffat (flux, centre, FWHM, and beta unless given) to one star.

    Returns (fwhm, beta, flux, ok). Weighted by the variance plane; the stamp spans ~1.5 FWHM each side.
    """
    from scipy.optimize import least_squares

    ny, nx = sub.shape
    half = half or int(np.clip(np.ceil(1.5 * fwhm_guess) + 1, 3, 12))
    ix, iy = int(round(x)), int(round(y))
    y0, y1, x0, x1 = max(iy - half, 0), min(iy + half + 1, ny), max(ix - half, 0), min(ix + half + 1, nx)
    stamp, sv = sub[y0:y1, x0:x1], var[y0:y1, x0:x1]
    good = np.isfinite(stamp) & np.isfinite(sv) & (sv > 0)
    if good.sum() < 9:
        return float("nan"), float("nan"), float("nan"), False
    yy, xx = np.mgrid[y0:y1, x0:x1]
    xx, yy, data, w = xx[good], yy[good], stamp[good], 1.0 / np.sqrt(sv[good])
    flux0 = max(float(data.sum()), 1.0)
    free_beta = beta is None

    nsub = 5 if fwhm_guess < 2.5 else 3 if fwhm_guess < 5.0 else 1

    def model(p):
        b = p[4] if free_beta else beta
        return p[0] * moffat_pixels(xx - p[1], yy - p[2], p[3], b, nsub)

    p0 = [flux0, x, y, fwhm_guess] + ([3.0] if free_beta else [])
    try:
        with np.errstate(all="ignore"):
            res = least_squares(lambda p: (model(p) - data) * w, p0, method="lm", x_scale="jac", max_nfev=100)
    except (ValueError, np.linalg.LinAlgError):
        return float("nan"), float("nan"), float("nan"), False
    p = res.x
    ok = bool(res.success) and 0.5 < p[3] < 6 * fwhm_guess + 5 and np.hypot(p[1] - x, p[2] - y) < 2 and p[0] > 0 \
        and (not free_beta or 1.2 < p[4] < 20.0)
    return float(p[3]), float(p[4] if free_beta else beta), float(p[0]), bool(ok)


@dataclass
class PsfShape:
    """The frame's Moffat PSF: FWHM (pixels) and beta, from its brightest clean stars."""

    fwhm: float
    beta: float
    n_stars: int


def frame_psf(sub, var, x, y, use: np.ndarray, *, fwhm_guess: float, max_stars: int = 10) -> PsfShape | None:
    """Median Moffat FWHM and beta over up to ``max_stars`` of the ``use`` sources (pass them brightest first)."""
    from astropy.stats import sigma_clipped_stats

    fits_ = [fit_moffat(sub, var, x[i], y[i], fwhm_guess=fwhm_guess) for i in np.flatnonzero(use)[:max_stars]]
    good = np.array([f[:2] for f in fits_ if f[3] and np.isfinite(f[0])]).reshape(-1, 2)
    if len(good) == 0:
        return None
    _, fwhm, _ = sigma_clipped_stats(good[:, 0], sigma=3.0, maxiters=5)
    _, beta, _ = sigma_clipped_stats(good[:, 1], sigma=3.0, maxiters=5)
    return PsfShape(float(fwhm), float(beta), len(good))


def model_aperture_fraction(r: float, psf: PsfShape, phases: int = 4) -> float:
    """Fraction of a pixel-integrated Moffat's light that ``sep.sum_circle`` of radius ``r`` collects,
    averaged over sub-pixel centre phases: the same operator as the measurement, applied to the model."""
    import sep

    half = int(np.ceil(max(r, 12 * psf.fwhm))) + 2
    d = np.arange(-half, half + 1, dtype=float)
    fr = []
    for px in np.linspace(-0.5, 0.5, phases, endpoint=False):
        for py in np.linspace(-0.5, 0.5, phases, endpoint=False):
            img = moffat_pixels(d[None, :] - px, d[:, None] - py, psf.fwhm, psf.beta)
            f, _, _ = sep.sum_circle(np.ascontiguousarray(img), [half + px], [half + py], r)
            fr.append(float(f[0]))
    return float(np.mean(fr))


@dataclass
class ApertureCorrection:
    """Aperture flux -> total flux: the measured curve of growth out to ``r_big`` times the model tail beyond."""

    value: float
    error: float
    n_stars: int  # stars in the empirical curve of growth (0: the PSF model alone)
    model_value: float  # the PSF model's own prediction, for comparison


def aperture_correction(sub: np.ndarray, sky_var: np.ndarray, x, y, r_small: float, r_big: float,
                        use: np.ndarray, psf: PsfShape | None, min_stars: int = 3) -> ApertureCorrection:
    """Total / aperture flux for point sources.

    Empirical where the frame has ``min_stars`` bright isolated stars (flux ratio big/small aperture,
    weighted, clipped) with the PSF model's fraction beyond ``r_big`` on top; the model alone otherwise.
    """
    import sep
    from astropy.stats import sigma_clip

    model_small = model_aperture_fraction(r_small, psf) if psf else float("nan")
    model_big = model_aperture_fraction(r_big, psf) if psf else 1.0
    model = 1.0 / model_small if psf else 1.0
    idx = np.flatnonzero(use)
    if len(idx) >= min_stars:
        fs, _, _ = sep.sum_circle(sub, x[idx], y[idx], r_small, var=sky_var)
        fb, eb, flb = sep.sum_circle(sub, x[idx], y[idx], r_big, var=sky_var)
        ok = (fs > 0) & (fb > 0) & (flb == 0)
        if ok.sum() >= min_stars:
            ratio = fb[ok] / fs[ok]
            w = 1.0 / (eb[ok] / fs[ok]) ** 2
            keep = ~np.ma.getmaskarray(sigma_clip(ratio, sigma=3.0, maxiters=5))
            corr = float(np.sum(ratio[keep] * w[keep]) / np.sum(w[keep]))
            err = float(np.sqrt(1.0 / np.sum(w[keep])))
            if keep.sum() > 2:
                err = max(err, float(np.std(ratio[keep], ddof=1) / np.sqrt(keep.sum())))
            return ApertureCorrection(corr / model_big, err / model_big, int(keep.sum()), model)
    return ApertureCorrection(model, 0.0, 0, model)


@dataclass
class Extraction:
    """Every detected source's measurements plus the frame-level quantities they needed."""

    table: Table  # x, y, flux, flux_err, snr, fwhm, flags, a, b, theta, npix, peak, flux_aper
    planes: Planes
    psf: PsfShape
    aperture_radius: float
    apcorr: ApertureCorrection

    @property
    def fwhm_pix(self) -> float:
        return self.psf.fwhm


def extract_sources(data: np.ndarray, *, gain: float | None, read_noise: float | None, saturation: float | None,
                    thresh: float = 3.0, minarea: int = 5, deblend_cont: float = 0.005, box: int = 64,
                    filter_size: int = 3, edge_px: int = 2, aperture_fwhm: float = 2.0,
                    aperture_radius: float | None = None, apcorr_fwhm: float = 4.0, min_snr_psf: float = 30.0,
                    min_snr_fwhm: float = 10.0, fwhm_guess: float | None = None, constant_noise: bool = False,
                    mask_sources: bool = True, refine_centroids: bool = True) -> Extraction:
    """Background, detection, PSF shape, windowed centroids, aperture photometry with aperture correction,
    flags.

    Two passes (unless ``mask_sources`` is off): the first detection masks the sources for the final background.
    The frame's Moffat PSF is fitted on its brightest clean stars; each source's ``fwhm`` is a Moffat fit with the
    frame's beta (NaN below ``min_snr_fwhm``). ``flux`` is the total flux (ADU) of a point source: the aperture
    flux (radius ``aperture_fwhm`` x FWHM) times the aperture correction; ``flux_err`` is the aperture's error
    from the variance (read noise + sky Poisson, plus the source's own Poisson term through ``gain``). A fixed
    ``aperture_radius`` (pixels) replaces ``aperture_fwhm``; ``refine_centroids`` moves positions to sep's
    windowed centroids; the rest of the options mirror SExtractor's (see the real-data test).
    """
    import sep
    from scipy import ndimage

    kw = dict(gain=gain, read_noise=read_noise, saturation=saturation, edge_px=edge_px, box=box,
              filter_size=filter_size, constant_noise=constant_noise)
    grown = None
    if mask_sources:
        _, seg = detect(make_planes(data, **kw), thresh=thresh, minarea=minarea, deblend_cont=deblend_cont)
        grown = ndimage.binary_dilation(seg > 0, iterations=3)
    planes = make_planes(data, source_mask=grown, **kw)
    objs, seg = detect(planes, thresh=thresh, minarea=minarea, deblend_cont=deblend_cont)
    n = len(objs)
    ny, nx = data.shape
    flags = np.zeros(n, dtype=np.int32)
    flags[(objs["flag"] & sep.OBJ_TRUNC) != 0] |= SOURCE_FLAGS["EDGE"]
    flags[(objs["flag"] & sep.OBJ_MERGED) != 0] |= SOURCE_FLAGS["BLENDED"]
    sat = (planes.mask & MASK_BITS["SAT"]) != 0
    if n and sat.any():
        hit = np.bincount(seg[sat].ravel(), minlength=n + 1)[1:] > 0
        flags[hit] |= SOURCE_FLAGS["SATURATED"]
    x, y = objs["x"].astype(float), objs["y"].astype(float)
    bad_pix = (planes.mask & (MASK_BITS["BAD"] | MASK_BITS["NO_DATA"])) != 0
    snr_iso = objs["flux"] / np.sqrt(np.maximum(objs["npix"], 1) * np.median(planes.sky_var))
    order = np.argsort(-objs["flux"]) if n else np.zeros(0, dtype=int)
    if fwhm_guess is None:
        clean = order[(flags[order] == 0) & (snr_iso[order] > 10)][:20]
        if len(clean):
            r50, _ = sep.flux_radius(planes.sub, x[clean], y[clean], 6.0 * objs["a"][clean], 0.5, subpix=5)
            fwhm_guess = float(np.clip(np.nanmedian(2.0 * r50), 1.0, 30.0))
        else:
            fwhm_guess = 3.0
    psf_use = (flags == 0) & (snr_iso > min_snr_psf)
    # frame_psf takes the first max_stars of ``use`` in index order; hand it the brightest first.
    psf = frame_psf(planes.sub, planes.variance, x[order], y[order], psf_use[order], fwhm_guess=fwhm_guess)
    if psf is None:
        psf = frame_psf(planes.sub, planes.variance, x[order], y[order], ((flags == 0) & (snr_iso > 5))[order],
                        fwhm_guess=fwhm_guess)
    if psf is None:
        psf = PsfShape(float(fwhm_guess), 3.0, 0)
    if n and refine_centroids:
        xw, yw, wflag = sep.winpos(planes.sub, x, y, np.full(n, psf.fwhm / 2.3548), mask=bad_pix)
        good = (wflag == 0) & np.isfinite(xw) & np.isfinite(yw) & (np.hypot(xw - x, yw - y) < psf.fwhm)
        x, y = np.where(good, xw, x), np.where(good, yw, y)
    fwhm = np.full(n, np.nan)
    for i in np.flatnonzero((snr_iso > min_snr_fwhm) & ((flags & SOURCE_FLAGS["SATURATED"]) == 0)):
        f, _, _, ok = fit_moffat(planes.sub, planes.variance, x[i], y[i], fwhm_guess=psf.fwhm, beta=psf.beta)
        fwhm[i] = f if ok else np.nan

    r_ap = float(aperture_radius) if aperture_radius else max(aperture_fwhm * psf.fwhm, 1.5)
    r_big = max(apcorr_fwhm * psf.fwhm, r_ap + 2.0)
    if n:
        flux, ferr, aflag = sep.sum_circle(planes.sub, x, y, r_ap, var=planes.sky_var, gain=gain, mask=bad_pix)
    else:
        flux, ferr, aflag = np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int16)
    flags[(aflag & sep.APER_TRUNC) != 0] |= SOURCE_FLAGS["EDGE"]
    flags[(aflag & sep.APER_HASMASKED) != 0] |= SOURCE_FLAGS["MASKED"]
    lo, hi_x, hi_y = edge_px + r_ap - 0.5, nx - 1 - edge_px - r_ap + 0.5, ny - 1 - edge_px - r_ap + 0.5
    flags[~((x >= lo) & (x <= hi_x) & (y >= lo) & (y <= hi_y))] |= SOURCE_FLAGS["EDGE"]
    flags[~(np.isfinite(flux) & (flux > 0))] |= SOURCE_FLAGS["BAD_FLUX"]
    snr = np.where(ferr > 0, flux / np.where(ferr > 0, ferr, 1.0), 0.0)
    in_big = (x >= r_big) & (x <= nx - 1 - r_big) & (y >= r_big) & (y <= ny - 1 - r_big)
    apc = aperture_correction(planes.sub, planes.sky_var, x, y, r_ap, r_big, psf=psf,
                              use=(flags == 0) & _isolated(x, y, objs["flux"], r_big + r_ap) & in_big & (snr > 30))
    table = Table({
        "x": x, "y": y,
        "flux": flux * apc.value, "flux_err": ferr * apc.value,
        "snr": snr, "fwhm": fwhm, "flags": flags,
        "a": objs["a"].astype(float), "b": objs["b"].astype(float), "theta": objs["theta"].astype(float),
        "npix": objs["npix"].astype(np.int32), "peak": objs["peak"].astype(float),
        "flux_aper": flux,
    })
    return Extraction(table, planes, psf, float(r_ap), apc)


def _isolated(x, y, flux, radius: float, contrast: float = 0.02) -> np.ndarray:
    """True where no other detection brighter than ``contrast`` x this one lies within ``radius``."""
    from scipy.spatial import cKDTree

    n = len(x)
    out = np.ones(n, dtype=bool)
    if n < 2:
        return out
    tree = cKDTree(np.column_stack([x, y]))
    for i, nbrs in enumerate(tree.query_ball_point(np.column_stack([x, y]), radius)):
        others = [j for j in nbrs if j != i]
        if others and np.any(flux[others] > contrast * flux[i]):
            out[i] = False
    return out


# ----------------------------------------------------------------------------------------------------------
# Cross-match and fit


def match_catalogue(x, y, refcat: Table, wcs: WCS, *, radius_pix: float, refine: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one nearest matches of sources to catalogue stars projected through the WCS (KD-tree in pixels).

    Returns (catalogue row index per source or -1, catalogue x, catalogue y). A median offset of the first
    matches is removed and the match redone, so a WCS a fraction of a pixel off does not lose stars.
    """
    from scipy.spatial import cKDTree

    n = len(x)
    idx = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(refcat) == 0:
        return idx, np.zeros(0), np.zeros(0)
    cx, cy = wcs.all_world2pix(np.asarray(refcat["ra"], float), np.asarray(refcat["dec"], float), 0)
    ok = np.isfinite(cx) & np.isfinite(cy)
    cx, cy = np.where(ok, cx, -1e9), np.where(ok, cy, -1e9)
    tree = cKDTree(np.column_stack([cx, cy]))
    shift = np.zeros(2)
    for _ in range(2 if refine else 1):
        d, j = tree.query(np.column_stack([x - shift[0], y - shift[1]]), distance_upper_bound=radius_pix)
        hit = np.isfinite(d)
        # one-to-one: a catalogue star claimed twice keeps its nearest source
        order = np.argsort(np.where(hit, d, np.inf))
        taken: set[int] = set()
        idx[:] = -1
        for i in order:
            if not hit[i]:
                break
            if int(j[i]) not in taken:
                taken.add(int(j[i]))
                idx[i] = j[i]
        m = idx >= 0
        if m.sum() >= 3:
            shift = np.array([np.median(x[m] - cx[idx[m]]), np.median(y[m] - cy[idx[m]])])
    return idx, cx, cy


def crowded_references(cx, cy, mags, radius_pix: float, delta_mag: float = 2.5) -> np.ndarray:
    """Catalogue stars with a neighbour within ``radius_pix`` no more than ``delta_mag`` fainter."""
    from scipy.spatial import cKDTree

    out = np.zeros(len(cx), dtype=bool)
    if len(cx) < 2:
        return out
    good = np.isfinite(mags)
    tree = cKDTree(np.column_stack([cx, cy]))
    for i, nbrs in enumerate(tree.query_ball_point(np.column_stack([cx, cy]), radius_pix)):
        others = [k for k in nbrs if k != i and good[k]]
        if others and np.any(mags[others] < mags[i] + delta_mag):
            out[i] = True
    return out


@dataclass
class ZeropointFit:
    zp: float
    zp_err: float
    colour_term: float
    colour_term_err: float
    scatter: float  # rms of the used residuals (mag)
    n_used: int
    used: np.ndarray = field(repr=False)  # bool over the input stars
    residuals: np.ndarray = field(repr=False)
    fitted_colour_term: bool = True
    colour_mean: float = float("nan")  # weighted mean colour of the used stars: zp - CT * this is best known


def fit_zeropoint(y: np.ndarray, colour: np.ndarray, sigma: np.ndarray, *, fit_colour: bool = True,
                  colour_term: float = 0.0, colour_term_sigma: float | None = None, clip_sigma: float = 3.0,
                  maxiters: int = 10, min_colour_span: float = 0.3, floor: float = 0.005,
                  max_scale: float = 1.5, min_clip_mag: float = 0.0) -> ZeropointFit:
    """Weighted least squares ``y = zp - colour_term * colour`` with iterative sigma clipping.

    ``y = m_catalogue + 2.5 log10(counts_e / exptime)`` per star; ``sigma`` its error (measurement and
    catalogue in quadrature, plus ``floor``). With ``colour_term_sigma`` the colour term has a Gaussian prior
    ``N(colour_term, colour_term_sigma)``: a frame with ten stars cannot pin the colour term alone, and the
    instrument's known value keeps its zero-point (defined at g-r = 0) from swinging with it. Without a prior
    it is fitted freely, and held at ``colour_term`` when not fitted or when the used stars span less than
    ``min_colour_span`` in colour.

    Clipping uses residuals in units of their error, scaled by their robust (MAD) spread when that exceeds 1
    (at most ``max_scale``: among ten stars two variables must not widen the net enough to keep themselves
    in); residuals under ``min_clip_mag`` are never clipped (the brightest stars' catalogue errors are
    themselves ~0.02 mag, and clipping them at 3 x their quoted error would pick among honest stars).

    With ten stars, where clipping starts decides where it ends: a start at CT = 0 clips every red star of a
    camera whose colour term is 0.2, a start through two variables keeps them. So the clipping runs from
    several robust starts (the median zero-point at the prior colour term; Theil-Sen lines through all stars
    and through the better-measured half) and the consensus with the most stars (then the lowest chi-square)
    wins. Errors come from the covariance, scaled by the reduced chi-square when it exceeds 1.
    """
    from scipy.stats import theilslopes

    y, colour, sigma = (np.asarray(a, dtype=float) for a in (y, colour, sigma))
    s2 = sigma ** 2 + floor ** 2
    finite = np.isfinite(y) & np.isfinite(colour) & np.isfinite(s2)
    free = fit_colour and colour_term_sigma is None
    starts = [colour_term]
    if free and finite.sum() >= 3:
        best = finite & (s2 <= max(np.median(s2[finite]), np.sort(s2[finite])[min(4, finite.sum() - 1)]))
        for sel in (finite, best):
            if sel.sum() >= 3 and np.ptp(colour[sel]) >= min_colour_span:
                starts.append(-float(theilslopes(y[sel], colour[sel])[0]))
    runs = []
    for ct0 in starts:
        use = finite.copy()
        if finite.sum() >= 3:
            first = _keep(y + ct0 * colour - np.median((y + ct0 * colour)[finite]), s2, finite, finite, clip_sigma,
                          max_scale, min_clip_mag)
            if first.sum() >= 2:
                use = first
        runs.append(_clip_fit(y, colour, s2, finite, use, fit_colour, colour_term, colour_term_sigma, clip_sigma,
                              maxiters, min_colour_span, max_scale, min_clip_mag))
    params, cov, fitted, use = max(runs, key=lambda r: (int(r[3].sum()), -_chi2(y, colour, s2, r[0], r[3])))
    n = int(use.sum())
    resid = y - (params[0] - params[1] * colour)
    npar = 2 if fitted else 1
    dof = n - npar + (1 if (fitted and colour_term_sigma is not None) else 0)
    red = _chi2(y, colour, s2, params, use) / dof if dof > 0 else 1.0
    cov = cov * max(red, 1.0)
    return ZeropointFit(
        zp=float(params[0]), zp_err=float(np.sqrt(cov[0, 0])) if n else float("nan"),
        colour_term=float(params[1]), colour_term_err=float(np.sqrt(cov[1, 1])) if fitted else 0.0,
        scatter=float(np.sqrt(np.average(resid[use] ** 2, weights=1.0 / s2[use]))) if n else float("nan"),
        n_used=n, used=use, residuals=resid, fitted_colour_term=fitted,
        colour_mean=float(np.average(colour[use], weights=1.0 / s2[use])) if n else float("nan"))


def _chi2(y, colour, s2, params, use) -> float:
    return float(np.sum((y[use] - (params[0] - params[1] * colour[use])) ** 2 / s2[use]))


def _keep(resid, s2, finite, use, clip_sigma, max_scale, min_clip_mag) -> np.ndarray:
    """Stars whose residual lies within the clipping threshold (see ``fit_zeropoint``)."""
    from astropy.stats import mad_std

    norm = resid / np.sqrt(s2)
    scale = float(np.clip(mad_std(norm[use]), 1.0, max_scale)) if use.sum() > 2 else 1.0
    return finite & (np.abs(norm - np.median(norm[use])) < np.maximum(clip_sigma * scale, min_clip_mag / np.sqrt(s2)))


def _clip_fit(y, colour, s2, finite, use, fit_colour, colour_term, colour_term_sigma, clip_sigma, maxiters,
              min_colour_span, max_scale, min_clip_mag):
    """Iterate weighted least squares and clipping from the star set ``use``: (params, cov, fitted, use)."""
    params, cov, fitted = np.array([np.nan, colour_term]), np.full((2, 2), np.nan), False
    for _ in range(maxiters):
        if use.sum() == 0:
            break
        w = 1.0 / s2[use]
        fitted = fit_colour and use.sum() >= 3 and (colour_term_sigma is not None
                                                     or np.ptp(colour[use]) >= min_colour_span)
        if fitted:
            A = np.column_stack([np.ones(use.sum()), -colour[use]])
            N = A.T @ (A * w[:, None])
            b = A.T @ (w * y[use])
            if colour_term_sigma is not None:
                N[1, 1] += 1.0 / colour_term_sigma ** 2
                b[1] += colour_term / colour_term_sigma ** 2
            cov = np.linalg.inv(N)
            params = cov @ b
        else:
            zp = np.sum(w * (y[use] + colour_term * colour[use])) / np.sum(w)
            params = np.array([zp, colour_term])
            cov = np.array([[1.0 / np.sum(w), 0.0], [0.0, 0.0]])
        new = _keep(y - (params[0] - params[1] * colour), s2, finite, use, clip_sigma, max_scale, min_clip_mag)
        if np.array_equal(new, use) or new.sum() < 2:
            break
        use = new
    return params, cov, fitted, use


# ----------------------------------------------------------------------------------------------------------
# Calibration of one frame


def _column(table: Table, name: str) -> np.ndarray:
    return np.asarray(np.ma.filled(np.ma.asarray(table[name], dtype=float), np.nan), dtype=float)


def pixel_scale_arcsec(wcs: WCS) -> float:
    return float(np.sqrt(abs(np.linalg.det(wcs.celestial.pixel_scale_matrix))) * 3600.0)


@dataclass
class Calibration:
    """Everything ``calibrate`` learned about one frame (the task packages it into its three outputs)."""

    obs: ObservationInfo
    extraction: Extraction
    fit: ZeropointFit
    src: Table
    n_matched: int
    refcat_band: str
    zp_adu: float
    pixel_scale: float


def calibrate_frame(data: np.ndarray, obs: ObservationInfo, wcs: WCS, refcat: Table, config: "CalibrateConfig",
                    where: str = "") -> Calibration:
    """Extract, match and fit one frame; ``NoWorkFound`` when too few catalogue stars are usable."""
    prefix = f"{where}: " if where else ""
    c = config
    band_col = c.band_map.get(obs.band, obs.band)
    blue, red = c.colour
    missing = [k for k in ("ra", "dec", band_col, f"{band_col}_err", blue, red) if k not in refcat.colnames]
    if band_col not in refcat.colnames:
        raise NoWorkFound(f"{prefix}band {obs.band!r} has no reference magnitude column {band_col!r} in refcat "
                          f"(columns: {', '.join(refcat.colnames)}); map it with config band_map")
    if missing:
        raise ValueError(f"{prefix}refcat lacks column(s) {', '.join(missing)}")
    ex = extract_sources(data, gain=obs.gain, read_noise=obs.read_noise, saturation=obs.saturation_adu,
                         thresh=c.detect_sigma, minarea=c.min_area, deblend_cont=c.deblend_cont,
                         box=c.background_box, edge_px=c.edge_px, aperture_fwhm=c.aperture_fwhm,
                         apcorr_fwhm=c.apcorr_fwhm)
    t = ex.table
    n = len(t)
    scale = pixel_scale_arcsec(wcs)
    radius = max(c.match_radius_arcsec / scale, c.match_radius_pix)
    x, y = np.asarray(t["x"]), np.asarray(t["y"])
    idx, cx, cy = match_catalogue(x, y, refcat, wcs, radius_pix=radius)
    mags = _column(refcat, band_col)
    mag_err = _column(refcat, f"{band_col}_err")
    colour_cat = _column(refcat, blue) - _column(refcat, red)
    colour_err = np.hypot(_column(refcat, f"{blue}_err"), _column(refcat, f"{red}_err")) \
        if f"{blue}_err" in refcat.colnames and f"{red}_err" in refcat.colnames else np.zeros(len(refcat))
    flags = np.asarray(t["flags"]).copy()
    m = idx >= 0
    if not m.any():
        raise NoWorkFound(f"{prefix}only 0 usable catalogue stars (none of {n} detected sources matched "
                          f"{len(refcat)} catalogue stars within {radius:.1f} px)")
    crowd = crowded_references(cx, cy, mags, ex.aperture_radius + c.crowding_radius_fwhm * ex.fwhm_pix,
                               c.crowding_delta_mag)
    flags[m & crowd[np.where(m, idx, 0)]] |= SOURCE_FLAGS["REF_CROWDED"]
    if c.exclude_variables and "variable" in refcat.colnames:
        known = np.asarray(refcat["variable"], dtype=bool)
        flags[m & known[np.where(m, idx, 0)]] |= SOURCE_FLAGS["REF_VARIABLE"]
    flux, flux_err = np.asarray(t["flux"]), np.asarray(t["flux_err"])
    with np.errstate(divide="ignore", invalid="ignore"):
        inst = -2.5 * np.log10(flux * obs.gain / obs.exptime)
        frac = flux_err / flux
    j = np.where(m, idx, 0)
    ycal = np.where(m, mags[j] - inst, np.nan)
    col = np.where(m, colour_cat[j], np.nan)
    prior = (c.colour_terms.get(obs.instrument) or {}).get(obs.band)
    ct_scale = 0.0 if prior is None else prior
    sigma = np.sqrt((MAG_PER_FRAC * frac) ** 2 + mag_err[j] ** 2 + (ct_scale * colour_err[j]) ** 2)
    eligible = m & ((flags & _UNFIT) == 0) & (np.asarray(t["snr"]) >= c.min_snr_calib) & np.isfinite(ycal) \
        & np.isfinite(col) & np.isfinite(sigma)
    if eligible.sum() < c.min_calib_stars:
        raise NoWorkFound(f"{prefix}only {int(eligible.sum())} usable catalogue stars (of {int(m.sum())} matched, "
                          f"{n} detected); need {c.min_calib_stars}")
    fit = fit_zeropoint(np.where(eligible, ycal, np.nan), col, sigma,
                        fit_colour=c.fit_colour_term,
                        colour_term=prior if prior is not None else 0.0,
                        colour_term_sigma=c.colour_term_sigma if prior is not None else c.free_colour_term_sigma,
                        clip_sigma=c.clip_sigma, max_scale=c.clip_max_scale, min_clip_mag=c.min_clip_mag,
                        min_colour_span=c.min_colour_span, floor=c.error_floor_mag)
    flags[fit.used] |= SOURCE_FLAGS["CALIB_USED"]
    flags[eligible & ~fit.used] |= SOURCE_FLAGS["CALIB_CLIPPED"]
    zp_adu = fit.zp + 2.5 * np.log10(obs.exptime / obs.gain)
    median_colour = float(np.median(col[fit.used])) if fit.n_used else float(np.nanmedian(colour_cat))
    colour = np.where(m & np.isfinite(col), col, median_colour)
    flags[~(m & np.isfinite(col))] |= SOURCE_FLAGS["NO_COLOUR"]
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, zp_adu - 2.5 * np.log10(flux), np.nan)  # natural system (at g-r = 0)
        magerr = np.where(flux > 0, MAG_PER_FRAC * frac, np.nan)
    ra, dec = wcs.all_pix2world(x, y, 0) if n else (np.zeros(0), np.zeros(0))
    ref_id = np.where(m, np.asarray(refcat["id"])[j] if len(refcat) else -1, -1).astype(np.int64)
    src = Table({
        "x": x, "y": y, "ra": np.asarray(ra, float), "dec": np.asarray(dec, float),
        "flux": flux, "flux_err": flux_err, "snr": np.asarray(t["snr"]), "fwhm": np.asarray(t["fwhm"]),
        "flags": flags.astype(np.int32), "mag": mag, "mag_err": magerr, "refcat_id": ref_id,
        "colour": colour, "mag_cal": mag - fit.colour_term * colour, "mag_cal_err": np.hypot(magerr, fit.zp_err),
        "calib_resid": np.where(eligible, fit.residuals, np.nan),
        "a": np.asarray(t["a"]), "b": np.asarray(t["b"]), "theta": np.asarray(t["theta"]),
        "npix": np.asarray(t["npix"]), "peak": np.asarray(t["peak"]), "flux_aper": np.asarray(t["flux_aper"]),
    })
    return Calibration(obs, ex, fit, src, int(m.sum()), band_col, float(zp_adu), scale)


class CalibrateConfig(TaskConfig):
    detect_sigma: float = Field(3.0, gt=0, description="Detection threshold in units of the sky noise (sep).")
    min_area: int = Field(5, ge=1, description="Fewest connected pixels above threshold for a detection.")
    deblend_cont: float = Field(0.005, gt=0, le=1, description="sep deblending contrast (1.0 disables deblending).")
    background_box: int = Field(64, ge=8, description="Background mesh size (pixels); sources are masked before "
                                                       "the final background.")
    edge_px: int = Field(2, ge=0, description="Width of the EDGE-masked border; apertures reaching it are "
                                               "flagged EDGE.")
    aperture_fwhm: float = Field(2.0, gt=0, description="Photometry aperture radius in units of the frame's FWHM.")
    apcorr_fwhm: float = Field(4.0, gt=0, description="Radius (FWHM) of the large aperture of the curve of growth; "
                                                       "the PSF model supplies the light beyond it.")
    match_radius_arcsec: float = Field(2.0, gt=0, description="Cross-match radius on the sky ...")
    match_radius_pix: float = Field(1.5, gt=0, description="... or in pixels, whichever is larger.")
    crowding_radius_fwhm: float = Field(2.0, ge=0, description="A catalogue neighbour within aperture radius + this "
                                                               "many FWHM ...")
    crowding_delta_mag: float = Field(4.0, ge=0, description="... and less than this many magnitudes fainter keeps "
                                                             "a star out of the fit (REF_CROWDED).")
    min_snr_calib: float = Field(5.0, ge=0, description="Faintest aperture SNR used in the zero-point fit.")
    min_calib_stars: int = Field(3, ge=2, description="Fewer usable catalogue stars: the frame ends no_work.")
    band_map: dict[str, str] = Field(default_factory=lambda: {"clear": "r"},
                                     description="Band -> refcat magnitude column, for bands the catalogue lacks "
                                                 "(an unfiltered frame calibrates against r with a colour term).")
    colour: tuple[str, str] = Field(("g", "r"), description="Catalogue columns whose difference is the colour index.")
    fit_colour_term: bool = Field(True, description="Fit the colour term per exposure (else hold it at the "
                                                    "instrument's known value, or 0).")
    colour_terms: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Known colour terms {instrument: {band: CT}}, e.g. from zeropointHistory's "
                                          "pooled value; used as a Gaussian prior of width colour_term_sigma.")
    colour_term_sigma: float = Field(0.01, gt=0, description="Prior width on a known colour term.")
    free_colour_term_sigma: float | None = Field(
        None, gt=0, description="Prior width around 0 for instruments without a known colour term (None: free fit).")
    min_colour_span: float = Field(0.3, ge=0, description="A free colour term needs this spread of g-r among the "
                                                          "used stars, else it is held at 0.")
    clip_sigma: float = Field(3.0, gt=0, description="Sigma-clipping threshold of the fit.")
    clip_max_scale: float = Field(1.5, ge=1, description="Largest factor the residuals' robust spread may widen "
                                                         "the clipping threshold by.")
    min_clip_mag: float = Field(0.05, ge=0, description="Residuals below this (mag) are never clipped.")
    exclude_variables: bool = Field(True, description="Keep catalogue stars flagged `variable` out of the fit "
                                                      "(a 0.05-mag pulsator among ten stars is not clipped).")
    error_floor_mag: float = Field(0.005, ge=0, description="Added in quadrature to each star's error in the fit.")
    default_gain: float | None = Field(None, gt=0, description="Gain (e-/ADU) for headers without one.")
    default_read_noise: float | None = Field(None, ge=0, description="Read noise (e-) for headers without one.")
    default_saturation: float | None = Field(None, gt=0, description="Saturation (ADU) for headers without one.")
    default_site_elev: float | None = Field(0.0, description="Site elevation (m) for headers without one (BJD moves "
                                                             "by ~3 ns per km of it); None leaves it unknown.")


class CalibrateConnections(Connections):
    raw = Input("raw", ("instrument", "exposure"), "RawImage", doc="The raw frame (ADU).")
    wcsSolution = Input("wcsSolution", ("instrument", "exposure"), "StructuredData",
                        doc="The plate solution (status header / solved / wcs_failed, WCS cards).")
    refcat = PrerequisiteInput("refcat", ("field",), "Table", doc="The field's reference catalogue.")
    calexp = Output("calexp", ("instrument", "exposure"), "Image",
                    doc="Raw pixels with the solved WCS, MASK and VARIANCE planes and the calibration in the header.")
    src = Output("src", ("instrument", "exposure"), "Table", doc="Calibrated sources.")
    photoCalib = Output("photoCalib", ("instrument", "exposure"), "StructuredData",
                        doc="Zero-point, colour term and what they rest on.")


_SCALING_KEYS = ("BZERO", "BSCALE", "BLANK")


class CalibrateTask(PipelineTask):
    """sep extraction, cross-match with the reference catalogue, sigma-clipped zero-point + colour term."""

    dimensions = ("instrument", "exposure")
    Config = CalibrateConfig
    Connections = CalibrateConnections
    resources = Resources(cores=1, memory_mb=1024, walltime_min=10)

    def run(self, raw: Image, wcsSolution: dict, refcat: Table, data_id=None):
        c = self.config
        where = "calibrate " + (", ".join(f"{k}={v}" for k, v in dict(data_id).items()) if data_id else "frame")
        wcs, status = solution_wcs(raw, wcsSolution, where)
        obs = observation_info(raw.header, default_gain=c.default_gain, default_read_noise=c.default_read_noise,
                               default_saturation=c.default_saturation, default_site_elev=c.default_site_elev,
                               data=raw.data, where=where)
        cal = calibrate_frame(np.asarray(raw.data), obs, wcs, refcat, c, where)
        fit, ex = cal.fit, cal.extraction
        self.log.info("%s: zp %.4f +- %.4f, CT %.3f +- %.3f, %d/%d stars, scatter %.3f, FWHM %.2f px",
                      where, fit.zp, fit.zp_err, fit.colour_term, fit.colour_term_err, fit.n_used, cal.n_matched,
                      fit.scatter, ex.fwhm_pix)
        calexp = self._calexp(raw, wcs, cal)
        src = cal.src
        src.meta.update({
            "mjd_mid": obs.mjd_mid, "exptime": obs.exptime, "band": obs.band, "instrument": obs.instrument,
            "exposure": obs.exposure, "site_lat": obs.site_lat, "site_lon": obs.site_lon, "site_elev": obs.site_elev,
            "zp": fit.zp, "zp_err": fit.zp_err, "colour_term": fit.colour_term, "zp_adu": cal.zp_adu,
            "gain": obs.gain, "flux_unit": "adu", "pixel_origin": 0, "colour_index": "-".join(c.colour),
            "flags": dict(SOURCE_FLAGS), "assumed": list(obs.assumed),
            "mag_system": "mag = zp - 2.5 log10(flux*gain/exptime) (natural, no colour term); "
                          "mag_cal = mag - colour_term*colour",
        })
        return {"calexp": calexp, "src": src, "photoCalib": self._photo_calib(cal, status, raw.data.shape)}

    @staticmethod
    def _calexp(raw: Image, wcs: WCS, cal: Calibration) -> Image:
        obs, fit, ex = cal.obs, cal.fit, cal.extraction
        header = raw.header.copy()
        for key in _SCALING_KEYS:
            header.remove(key, ignore_missing=True, remove_all=True)
        out = Image(np.asarray(raw.data, dtype=np.float32), header, ex.planes.mask.astype(np.int32),
                    ex.planes.variance.astype(np.float32))
        out.set_wcs(wcs.celestial)
        h = out.header
        h["PHOTZP"] = (round(cal.zp_adu, 6), "mag = PHOTZP - 2.5 log10(ADU) - COLORTRM (g-r)")
        h["PHOTZPER"] = (round(fit.zp_err, 6), "[mag] zero-point uncertainty")
        h["COLORTRM"] = (round(fit.colour_term, 6), "colour term on (g-r)")
        h["ZPELSEC"] = (round(fit.zp, 6), "zero-point for e-/s (survey definition)")
        h["MJD-MID"] = (obs.mjd_mid, "[d] MJD (UTC) mid-exposure")
        h["EXPTIME"] = (obs.exptime, "[s] exposure time")
        for key, value, comment in (("SITELAT", obs.site_lat, "[deg] site latitude"),
                                    ("SITELONG", obs.site_lon, "[deg] site longitude (east +)"),
                                    ("SITEELEV", obs.site_elev, "[m] site elevation")):
            if value is not None:
                h[key] = (value, comment)
            else:
                h.remove(key, ignore_missing=True)
        h["FWHMPIX"] = (round(ex.fwhm_pix, 4), "[px] Moffat FWHM of the PSF")
        h["PSFBETA"] = (round(ex.psf.beta, 3), "Moffat beta of the PSF")
        h["BAND"] = (obs.band, "band")
        h["INSTRUME"] = (obs.instrument, "instrument")
        h["GAINUSED"] = (obs.gain, "[e-/ADU] gain used for the variance")
        h["BKGMEAN"] = (round(ex.planes.global_back, 4), "[ADU] mean background")
        h["BKGRMS"] = (round(ex.planes.global_rms, 4), "[ADU] background rms")
        h["APCORR"] = (round(ex.apcorr.value, 6), "aperture -> total flux factor")
        h["NCALSTAR"] = (fit.n_used, "stars in the zero-point fit")
        return out

    @staticmethod
    def _photo_calib(cal: Calibration, status: str, shape) -> dict:
        obs, fit, ex = cal.obs, cal.fit, cal.extraction

        def num(v):
            return None if v is None or not np.isfinite(v) else float(v)

        return {
            "zp": num(fit.zp), "zp_err": num(fit.zp_err), "colour_term": num(fit.colour_term),
            "colour_term_err": num(fit.colour_term_err), "colour_term_fitted": bool(fit.fitted_colour_term),
            "colour_mean": num(fit.colour_mean), "scatter": num(fit.scatter), "n_matched": cal.n_matched,
            "n_used": fit.n_used, "n_sources": len(cal.src), "band": obs.band, "instrument": obs.instrument,
            "exposure": obs.exposure, "mjd_mid": obs.mjd_mid, "exptime": obs.exptime, "airmass": num(obs.airmass),
            "fwhm_pix": num(ex.fwhm_pix), "psf_beta": num(ex.psf.beta), "pixel_scale_arcsec": num(cal.pixel_scale),
            "shape": list(shape), "zp_adu": num(cal.zp_adu), "gain": obs.gain, "read_noise": num(obs.read_noise),
            "saturation_adu": num(obs.saturation_adu), "assumed": list(obs.assumed),
            "aperture_radius_pix": num(ex.aperture_radius), "apcorr": num(ex.apcorr.value),
            "apcorr_err": num(ex.apcorr.error), "apcorr_stars": ex.apcorr.n_stars,
            "apcorr_model": num(ex.apcorr.model_value), "background": num(ex.planes.global_back),
            "background_rms": num(ex.planes.global_rms), "refcat_band": cal.refcat_band, "wcs_status": status,
            "site_lat": num(obs.site_lat), "site_lon": num(obs.site_lon), "site_elev": num(obs.site_elev),
            "zp_definition": "counts_e = exptime * 10**(-0.4*(m + colour_term*(g-r) - zp)); "
                             "zp_adu = zp + 2.5 log10(exptime/gain) for the frame's ADU",
        }


# ----------------------------------------------------------------------------------------------------------
# Per-instrument history


def pooled_colour_term(ct: np.ndarray, ct_err: np.ndarray, clip_sigma: float = 3.0) -> tuple[float, float, int]:
    """Inverse-variance mean of per-exposure colour terms, sigma-clipped; its error is inflated by the
    scatter when that exceeds the formal errors. (Exposures of one field share their calibration stars, so
    catalogue errors do not average down across exposures: treat the error as a lower bound.)"""
    from astropy.stats import sigma_clip

    ok = np.isfinite(ct) & np.isfinite(ct_err) & (ct_err > 0)
    if ok.sum() == 0:
        return float("nan"), float("nan"), 0
    v, e = ct[ok], ct_err[ok]
    keep = ~np.ma.getmaskarray(sigma_clip((v - np.median(v)) / e, sigma=clip_sigma, maxiters=5,
                                          stdfunc="mad_std")) if len(v) > 2 else np.ones(len(v), bool)
    w = 1.0 / e[keep] ** 2
    mean = float(np.sum(w * v[keep]) / np.sum(w))
    err = float(np.sqrt(1.0 / np.sum(w)))
    if keep.sum() > 2:
        chi2 = float(np.sum(w * (v[keep] - mean) ** 2) / (keep.sum() - 1))
        err *= max(1.0, np.sqrt(chi2))
    return mean, err, int(keep.sum())


def fit_extinction(airmass: np.ndarray, zp: np.ndarray, zp_err: np.ndarray, min_range: float = 0.2
                   ) -> tuple[float, float, float, float] | None:
    """Straight line zp = zp0 - k * airmass (weighted, 3-sigma clipped): the site's extinction coefficient k.

    None when fewer than three exposures or an airmass range under ``min_range``.
    """
    ok = np.isfinite(airmass) & np.isfinite(zp) & np.isfinite(zp_err) & (zp_err > 0)
    if ok.sum() < 3 or np.ptp(airmass[ok]) < min_range:
        return None
    fit = fit_zeropoint(zp[ok], airmass[ok], zp_err[ok], fit_colour=True, min_colour_span=min_range, floor=0.0,
                        max_scale=10.0)
    if not fit.fitted_colour_term:
        return None
    return fit.zp, fit.zp_err, fit.colour_term, fit.colour_term_err


class ZeropointHistoryConfig(TaskConfig):
    min_airmass_range: float = Field(0.2, ge=0, description="Fit an extinction coefficient only over at least this "
                                                            "range of airmass.")


class ZeropointHistoryConnections(Connections):
    photoCalib = Input("photoCalib", ("instrument", "exposure"), "StructuredData", multiple=True,
                       doc="Every calibrated exposure of the instrument in the band.")
    history = Output("zeropointHistory", ("instrument", "band"), "Table", doc="One row per exposure.")


_HISTORY_COLUMNS = ("exposure", "mjd_mid", "airmass", "exptime", "zp", "zp_err", "colour_term", "colour_term_err",
                    "colour_mean", "scatter", "n_matched", "n_used", "fwhm_pix", "zp_adu")


class ZeropointHistoryTask(PipelineTask):
    """The instrument's calibration through time in one band: one row per exposure, the pooled colour term,
    each zero-point re-evaluated at that pooled colour term, and the extinction coefficient.

    A single frame's ten stars cannot pin a colour term; an instrument's hundred frames can. Each exposure's fit
    fixes zp - CT * <g-r> best (``colour_mean`` is the weighted mean colour of its stars), so its zero-point at
    the pooled colour term is ``zp + (CT_pooled - CT) * colour_mean`` (``zp_pooled``). Feed ``colour_term``
    from the meta back into calibrate's ``colour_terms`` config to calibrate with it directly.
    """

    dimensions = ("instrument", "band")
    Config = ZeropointHistoryConfig
    Connections = ZeropointHistoryConnections
    resources = Resources(cores=1, memory_mb=256, walltime_min=5)

    def run(self, photoCalib: list[dict], data_ids=None):
        rows = sorted(photoCalib, key=lambda d: (d.get("mjd_mid") or 0.0, d.get("exposure") or 0))
        if not rows:
            raise NoWorkFound("no calibrated exposures")

        def col(name, dtype=float):
            vals = [r.get(name) for r in rows]
            if dtype is float:
                return np.array([np.nan if v is None else float(v) for v in vals])
            return np.array([-1 if v is None else v for v in vals], dtype=dtype)

        table = Table({name: col(name, np.int64 if name in ("exposure", "n_matched", "n_used") else float)
                       for name in _HISTORY_COLUMNS})
        ct, ct_err = table["colour_term"].data, table["colour_term_err"].data
        fitted = np.array([bool(r.get("colour_term_fitted", True)) for r in rows])
        ct_pool, ct_pool_err, n_ct = pooled_colour_term(ct, np.where(fitted, ct_err, np.nan))
        if not np.isfinite(ct_pool):  # nothing fitted a colour term: keep what the exposures held
            ct_pool, ct_pool_err = float(np.nanmedian(ct)), 0.0
        cm = np.nan_to_num(table["colour_mean"].data)
        table["zp_pooled"] = table["zp"] + (ct_pool - ct) * cm
        # the zero-point at the mean colour is what each fit knows; add the pooled CT's error at that colour
        zp_at_mean_err = np.sqrt(np.clip(table["zp_err"] ** 2 - (ct_err * cm) ** 2, 0, None))
        table["zp_pooled_err"] = np.hypot(zp_at_mean_err, ct_pool_err * cm)
        instrument = rows[0].get("instrument")
        band = rows[0].get("band")
        meta = {"instrument": instrument, "band": band, "n_exposures": len(rows), "colour_term": ct_pool,
                "colour_term_err": ct_pool_err, "colour_term_n": n_ct,
                "zp_median": float(np.nanmedian(table["zp_pooled"])),
                "zp_rms": float(np.nanstd(table["zp_pooled"])), "fwhm_median": float(np.nanmedian(table["fwhm_pix"]))}
        ext = fit_extinction(table["airmass"].data, table["zp_pooled"].data, table["zp_pooled_err"].data,
                             self.config.min_airmass_range)
        if ext is not None:
            meta.update({"zp_airmass0": ext[0], "zp_airmass0_err": ext[1], "extinction": ext[2],
                         "extinction_err": ext[3]})
        table.meta.update(meta)
        self.log.info("%s %s: %d exposures, CT %.3f +- %.3f, median zp %.3f", instrument, band, len(rows), ct_pool,
                      ct_pool_err, meta["zp_median"])
        return {"history": table}
