"""Source extraction for calibration: sep background, variance and mask planes, detection, windowed centroids,
aperture photometry with an aperture correction, per-source flags (``SOURCE_FLAGS``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...astro.psf import MoffatPSF
from ...datastore.image import MASK_BITS
from .psf import (
    ApertureCorrection,
    aperture_correction,
    fit_moffat,
    frame_psf,
    model_aperture_fraction,
    pixel_quadrature,
)

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["SOURCE_FLAGS", "Extraction", "Planes", "detect", "extract_sources", "make_planes"]

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
UNFIT_FLAGS = 255  # any of bits 1-128: unfit for calibration
MAG_PER_FRAC = 2.5 / np.log(10.0)  # mag error per fractional flux error


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
                constant_noise: bool = False, sky_data: np.ndarray | None = None) -> Planes:
    """sep background (sources masked when ``source_mask`` is given), variance and mask planes.

    Variance = read noise^2 + Poisson(sky) + Poisson(source) in ADU^2. The sky's Poisson part is *measured*
    (sep's background rms, floored at the read noise) rather than modelled from the sky level, because an
    unrecorded bias pedestal (the MaxIm-DL frames' 100 ADU) would otherwise inflate it; the source's Poisson
    part is the background-subtracted signal divided by the gain (left out when ``gain`` is None).
    ``constant_noise`` uses the global rms everywhere, as SExtractor does without a weight map. Pixels with no
    data get NaN variance and the BAD | NO_DATA mask bits. ``sky_data``: the image sep measures the sky on, when
    not ``data`` itself (a crowded frame with its stars' model subtracted).
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
    ny, nx = data.shape
    bw, bh = min(box, nx), min(box, ny)
    if source_mask is not None and _usable_meshes(bmask | source_mask, bw, bh):
        bmask = bmask | source_mask
    sky = clean if sky_data is None else np.ascontiguousarray(np.where(bad, 0.0, sky_data), dtype=np.float64)
    bkg = sep.Background(sky, mask=bmask, bw=bw, bh=bh, fw=filter_size, fh=filter_size)
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


@dataclass
class Extraction:
    """Every detected source's measurements plus the frame-level quantities they needed."""

    table: Table  # x, y, flux, flux_err, snr, fwhm, flags, a, b, theta, npix, peak, flux_aper
    planes: Planes
    psf: MoffatPSF
    aperture_radius: float
    apcorr: ApertureCorrection

    @property
    def fwhm_pix(self) -> float:
        return self.psf.fwhm


def extract_sources(data: np.ndarray, *, gain: float | None, read_noise: float | None, saturation: float | None,
                    thresh: float = 3.0, minarea: int = 5, deblend_cont: float = 0.005, box: int = 64,
                    filter_size: int = 3, edge_px: int = 2, aperture_fwhm: float = 2.0,
                    aperture_radius: float | None = None, apcorr_fwhm: float = 4.0, apcorr_model_error: float = 0.0025,
                    min_snr_psf: float = 30.0,
                    min_snr_fwhm: float = 10.0, fwhm_guess: float | None = None, constant_noise: bool = False,
                    mask_sources: bool = True, refine_centroids: bool = True,
                    crowded_fraction: float | None = 0.25) -> Extraction:
    """Background, detection, PSF shape, windowed centroids, aperture photometry with aperture correction,
    flags.

    Two passes (unless ``mask_sources`` is off): the first detection masks the sources for the final background.
    The frame's Moffat PSF is fitted on its brightest clean stars; each source's ``fwhm`` is a Moffat fit with the
    frame's beta (NaN below ``min_snr_fwhm``). ``flux`` is the total flux (ADU) of a point source: the aperture
    flux (radius ``aperture_fwhm`` x FWHM) times the aperture correction; ``flux_err`` is the aperture's error
    from the variance (read noise + sky Poisson, plus the source's own Poisson term through ``gain``). A fixed
    ``aperture_radius`` (pixels) replaces ``aperture_fwhm``; ``refine_centroids`` moves positions to sep's
    windowed centroids; the rest of the options mirror SExtractor's (see the real-data test).

    A crowded frame (source masks over more than ``crowded_fraction`` of its pixels) takes its sky from the image
    with its stars' PSF model subtracted: between crowded stars the unmasked pixels carry their neighbours' wings,
    so the sky measured on them is too high and the faint stars lose flux (2" pixels, 250 stars: +5 ADU, -6 % at
    S/N 10). None keeps the plain background.
    """
    import sep
    from astropy.table import Table
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
        psf = MoffatPSF(float(fwhm_guess), 3.0, "default", 0)
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
        if crowded_fraction is not None and grown is not None and grown.mean() > crowded_fraction:
            planes = _star_subtracted_sky(data, seg, x, y, flux, psf, r_ap, kw)
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
                              use=(flags == 0) & _isolated(x, y, objs["flux"], r_big + r_ap) & in_big & (snr > 30),
                              model_error=apcorr_model_error)
    table = Table({
        "x": x, "y": y,
        "flux": flux * apc.value, "flux_err": ferr * apc.value,
        "snr": snr, "fwhm": fwhm, "flags": flags,
        "a": objs["a"].astype(float), "b": objs["b"].astype(float), "theta": objs["theta"].astype(float),
        "npix": objs["npix"].astype(np.int32), "peak": objs["peak"].astype(float),
        "flux_aper": flux,
    })
    return Extraction(table, planes, psf, float(r_ap), apc)


def _usable_meshes(mask: np.ndarray, bw: int, bh: int) -> int:
    """Background meshes with at most half their pixels masked: sep drops the others, and with none left it
    returns a background of zero, so a source mask that leaves none is not used (a crowded field)."""
    ny, nx = mask.shape
    m = mask[:ny // bh * bh, :nx // bw * bw].reshape(ny // bh, bh, nx // bw, bw)
    return int(np.sum(m.mean(axis=(1, 3)) <= 0.5))


def _star_subtracted_sky(data, seg, x, y, flux, psf: MoffatPSF, r_ap: float, kw) -> Planes:
    """Planes whose sky sep measured on ``data`` minus every source's PSF model (total flux from its aperture
    flux and the model's aperture fraction), the sources' cores masked (where a model misses most)."""
    from scipy import ndimage

    from ...astro.psf import render_moffat_stars

    total = np.clip(np.nan_to_num(flux), 0.0, None) / max(model_aperture_fraction(r_ap, psf), 0.05)
    model = render_moffat_stars(data.shape, x, y, total, psf.fwhm, psf.beta, radius=int(np.ceil(max(6 * psf.fwhm, 8))),
                                quadrature=pixel_quadrature(psf.fwhm))
    cores = ndimage.binary_dilation(seg > 0, iterations=1)
    return make_planes(data, source_mask=cores, sky_data=np.asarray(data, dtype=np.float64) - model, **kw)


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
