"""Candidates in the difference: matched-filter detection in both signs, PSF photometry with noise calibrated on
blank positions, windowed shapes, flags (``FLAGS``), cutouts."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ....astro.psf import FWHM_SIGMA
from ....datastore.image import MASK_BITS
from .psf import DifferencePSF
from .subtract import DiffimResult

if TYPE_CHECKING:
    from astropy.table import Table
    from astropy.wcs import WCS

__all__ = ["FLAGS", "calibrate_noise", "detect_candidates", "make_cutouts", "moments", "psf_photometry", "snr_map"]

# diaSrc `flags` bits: what lies under a candidate's PSF footprint.
FLAGS = {"EDGE": 1, "NO_DATA": 2, "SAT": 4, "BAD": 8}


def psf_photometry(diff: np.ndarray, ivar: np.ndarray, psf: DifferencePSF, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Linear PSF-fit flux (a total flux: the model is normalised over the plane) and its error at each (x, y)."""
    h = psf.half
    pad = h + 1
    dp = np.pad(diff, pad)
    wp = np.pad(ivar, pad)
    flux = np.full(len(x), np.nan)
    err = np.full(len(x), np.nan)
    ny, nx = diff.shape
    for k, (xx, yy) in enumerate(zip(x, y, strict=True)):
        ix, iy = int(round(xx)), int(round(yy))
        if not (0 <= ix < nx and 0 <= iy < ny):
            continue
        p = psf.stamp(xx - ix, yy - iy)
        d = dp[iy + pad - h:iy + pad + h + 1, ix + pad - h:ix + pad + h + 1]
        w = wp[iy + pad - h:iy + pad + h + 1, ix + pad - h:ix + pad + h + 1]
        den = float(np.sum(p * p * w))
        if den > 0:
            flux[k] = float(np.sum(p * d * w)) / den
            err[k] = 1.0 / math.sqrt(den)
    return flux, err


def calibrate_noise(res: DiffimResult, n: int = 300, seed: int = 0) -> float:
    """Factor by which PSF-fit errors understate the scatter of PSF fluxes at blank positions (robust rms of
    flux / error there); convolution correlates the noise, which per-pixel variances cannot show."""
    from astropy.stats import mad_std
    from scipy.ndimage import binary_dilation

    rng = np.random.default_rng(seed)
    src = np.abs(res.science) > 3 * np.sqrt(res.sci_var)
    src |= np.abs(res.template) > 3 * np.sqrt(np.maximum(res.tmpl_var, 1e-30))
    src = binary_dilation(src, iterations=int(max(2, round(2 * res.psf_fwhm))))
    cand = np.flatnonzero((~res.bad & ~src).ravel())
    if len(cand) < 30:
        return 1.0
    pick = rng.choice(cand, size=min(n, len(cand)), replace=False)
    yy, xx = np.unravel_index(pick, res.difference.shape)
    ivar = np.where(np.isfinite(res.variance), 1.0 / res.variance, 0.0)
    f, e = psf_photometry(res.difference, ivar, res.psf, xx.astype(float), yy.astype(float))
    chi = (f / e)[np.isfinite(f / e)]
    if len(chi) < 30:
        return 1.0
    return float(np.clip(mad_std(chi), 0.5, 20.0))


def snr_map(res: DiffimResult) -> np.ndarray:
    """Matched-filter significance of a point source at every pixel, (D w) * P / sqrt(w * P^2) with w = 1/var,
    divided by the noise-calibration factor; 0 on masked pixels."""
    from scipy.signal import fftconvolve

    ivar = np.where(np.isfinite(res.variance) & ~res.bad, 1.0 / res.variance, 0.0)
    p = res.psf.stamp()[::-1, ::-1]
    num = fftconvolve(res.difference * ivar, p, mode="same")
    den = fftconvolve(ivar, p * p, mode="same")
    floor = 1e-3 * float(np.median(den[den > 0])) if (den > 0).any() else np.inf
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(den > floor, num / np.sqrt(np.maximum(den, 1e-300)), 0.0)
    s = np.where(res.bad | ~np.isfinite(s), 0.0, s)
    return s / res.noise_factor


def moments(image: np.ndarray, x, y, sigma: float, half: int | None = None):
    """Gaussian-windowed second moments at each (x, y): a, b (rms along the axes, px), theta (rad), FWHM.

    The window (sigma, the PSF's) keeps neighbours and noise out; the moments are corrected for it as for a
    Gaussian source (1/s^2 = 1/m^2 - 1/sigma^2), so a point source gives the PSF's width and a cosmic ray
    a much smaller one.
    """
    half = half or int(max(3, math.ceil(3 * sigma)))
    ny, nx = image.shape
    pad = np.pad(image, half)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(float)
    out = np.full((len(x), 4), np.nan)
    for k, (x0, y0) in enumerate(zip(x, y, strict=True)):
        ix, iy = int(round(x0)), int(round(y0))
        st = np.clip(pad[iy:iy + 2 * half + 1, ix:ix + 2 * half + 1], 0, None)
        dx, dy = xx - (x0 - ix), yy - (y0 - iy)
        w = st * np.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
        sw = w.sum()
        if sw <= 0:
            continue
        mx, my = (w * dx).sum() / sw, (w * dy).sum() / sw
        cxx = (w * (dx - mx) ** 2).sum() / sw
        cyy = (w * (dy - my) ** 2).sum() / sw
        cxy = (w * (dx - mx) * (dy - my)).sum() / sw
        tr, det = cxx + cyy, cxx * cyy - cxy * cxy
        disc = math.sqrt(max(tr * tr / 4 - det, 0.0))
        l1, l2 = tr / 2 + disc, max(tr / 2 - disc, 1e-6)

        def deconv(m2):
            inv = 1.0 / m2 - 1.0 / (sigma * sigma)
            return 1.0 / inv if inv > 1e-6 else (3 * sigma) ** 2

        s1, s2 = deconv(l1), deconv(l2)
        out[k] = (math.sqrt(s1), math.sqrt(s2), 0.5 * math.atan2(2 * cxy, cxx - cyy),
                  FWHM_SIGMA * math.sqrt((s1 + s2) / 2.0))
    return out


def detect_candidates(res: DiffimResult, wcs: WCS, *, threshold: float = 5.0, min_area: int = 3,
                      snr_min: float = 5.0, max_candidates: int = 2000) -> Table:
    """Positive and negative point-source detections in the difference at ``threshold`` sigma.

    Detection runs ``sep`` on the matched-filter significance map (the optimal test for a point source of the
    difference's PSF under the per-pixel variance, noise-calibrated), in both signs; each peak is then measured
    on the difference itself: windowed centroid, PSF-fit flux and S/N, windowed shape.
    """
    import sep
    from astropy.table import Table

    diff = np.ascontiguousarray(res.difference, dtype=np.float64)
    smap = snr_map(res)
    mask = np.ascontiguousarray(res.bad)
    rows = []
    for sign in (1.0, -1.0):
        try:
            objs = sep.extract(np.ascontiguousarray(sign * smap), threshold, mask=mask, minarea=min_area,
                               filter_kernel=None, deblend_cont=0.005, clean=False)
        except Exception as exc:  # sep gives up on pathological images (too many pixels above threshold)
            raise RuntimeError(f"sep could not extract from the difference image: {exc}") from None
        rows += [(sign, o) for o in objs]
    if not rows:
        return _empty_table()
    sign = np.array([r[0] for r in rows])
    o = np.array([r[1] for r in rows])
    x0, y0 = o["xcpeak"].astype(float), o["ycpeak"].astype(float)
    sig = max(res.psf_fwhm / FWHM_SIGMA, 0.7)
    xw, yw = x0.copy(), y0.copy()
    for s in (1.0, -1.0):
        sel = np.flatnonzero(sign == s)
        if len(sel):
            a, b, f = sep.winpos(np.ascontiguousarray(s * diff), x0[sel], y0[sel], np.full(len(sel), sig),
                                 mask=mask)
            ok = (f == 0) & np.isfinite(a) & np.isfinite(b) & (np.hypot(a - x0[sel], b - y0[sel]) < sig)
            xw[sel[ok]] = a[ok]
            yw[sel[ok]] = b[ok]
    ivar = np.where(np.isfinite(res.variance), 1.0 / res.variance, 0.0)
    flux, ferr = psf_photometry(diff, ivar, res.psf, xw, yw)
    ferr = ferr * res.noise_factor
    snr = flux / ferr
    keep = np.isfinite(snr) & (np.abs(snr) >= snr_min) & (np.sign(flux) == sign)
    if not keep.any():
        return _empty_table()
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(-np.abs(snr[idx]))][:max_candidates]
    ny, nx = diff.shape
    ra, dec = wcs.wcs_pix2world(xw[idx], yw[idx], 0)
    flags = _flags(res, xw[idx], yw[idx], ny, nx)
    shape = np.vstack([moments(s * diff, [x], [y], sig) for s, x, y in zip(sign[idx], xw[idx], yw[idx], strict=True)])
    fl = flux[idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = np.where(fl > 0, res.zp - 2.5 * np.log10(np.abs(fl)), np.nan)
        mag_err = np.where(fl > 0, 2.5 / np.log(10) * ferr[idx] / np.abs(fl), np.nan)
    return Table({
        "id": np.arange(len(idx), dtype=np.int64),
        "x": xw[idx], "y": yw[idx], "ra": np.asarray(ra, float), "dec": np.asarray(dec, float),
        "flux": fl, "flux_err": ferr[idx], "snr": snr[idx], "mag": mag, "mag_err": mag_err,
        "a": shape[:, 0], "b": shape[:, 1], "theta": shape[:, 2], "fwhm": shape[:, 3],
        "peak_snr": sign[idx] * o["peak"][idx].astype(float),
        "npix": o["npix"][idx].astype(np.int64),
        "isdiffpos": fl > 0,
        "flags": flags,
    })


def _flags(res, x, y, ny, nx) -> np.ndarray:
    r = int(max(2, round(res.psf_fwhm)))
    out = np.zeros(len(x), np.int32)
    for k, (xx, yy) in enumerate(zip(x, y, strict=True)):
        ix, iy = int(round(xx)), int(round(yy))
        if ix < r or iy < r or ix >= nx - r or iy >= ny - r:
            out[k] |= FLAGS["EDGE"]
        sl = (slice(max(iy - r, 0), iy + r + 1), slice(max(ix - r, 0), ix + r + 1))
        if res.nodata[sl].any():
            out[k] |= FLAGS["NO_DATA"]
        m = res.smask[sl]
        if (m & MASK_BITS["SAT"]).any():
            out[k] |= FLAGS["SAT"]
        if (m & (MASK_BITS["BAD"] | MASK_BITS["CR"])).any():
            out[k] |= FLAGS["BAD"]
    return out


def _empty_table() -> Table:
    from astropy.table import Table

    cols = {"id": np.int64, "x": float, "y": float, "ra": float, "dec": float, "flux": float, "flux_err": float,
            "snr": float, "mag": float, "mag_err": float, "a": float, "b": float, "theta": float, "fwhm": float,
            "peak_snr": float, "npix": np.int64, "isdiffpos": bool, "flags": np.int32}
    return Table({k: np.zeros(0, dtype=v) for k, v in cols.items()})


def make_cutouts(res: DiffimResult, table: Table, size: int = 31) -> dict[str, np.ndarray]:
    """Stamps centred on each candidate: science, aligned reference (not convolved), difference, noise (sigma)."""
    h = size // 2
    n = len(table)
    out = {k: np.zeros((n, size, size), np.float32) for k in ("science", "reference", "difference", "sigma")}
    sig = np.sqrt(res.variance)
    sig = np.where(np.isfinite(sig), sig, 0.0)
    planes = {"science": res.science, "reference": res.template, "difference": res.difference, "sigma": sig}
    padded = {k: np.pad(v, h) for k, v in planes.items()}
    for i, (x, y) in enumerate(zip(table["x"], table["y"], strict=True)):
        ix, iy = int(round(float(x))), int(round(float(y)))
        for k, p in padded.items():
            out[k][i] = p[iy:iy + size, ix:ix + size]
    out["id"] = np.asarray(table["id"], np.int64) if n else np.zeros(0, np.int64)
    out["x"] = np.asarray(table["x"], np.float64) if n else np.zeros(0)
    out["y"] = np.asarray(table["y"], np.float64) if n else np.zeros(0)
    return out
