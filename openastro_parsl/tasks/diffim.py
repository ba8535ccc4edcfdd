"""Difference imaging: template onto the new frame, PSF-matched and flux-scaled, subtracted; 5-sigma candidates.

The template (a deep co-add on the field's grid at zero-point 25) is resampled onto the science frame's own
WCS with ``reproject`` (exact, flux-conserving), scaled to the science zero-point, and the sharper of the two
images is convolved to the other's PSF with a kernel fitted on stars (Alard & Lupton 1998: Gaussians times
polynomials, plus a differential sky; both directions are tried when the seeings are close and the better fit
kept). With too few stars the kernel is the Gaussian that takes one FWHM to the other. Keeping the science
frame's grid means its pixels and noise are never resampled.

Candidates are found on the matched-filter significance map in both signs (``sep``), and measured on the
difference by PSF fitting. The PSF is a pixel-integrated Moffat fitted to the stars (the header FWHM and
beta = 3 when there are none), carried through the kernel when the science frame was the one convolved; its
analytic normalisation makes fluxes totals, not aperture fractions. Errors are calibrated on blank positions
(convolution correlates the noise), and each candidate gets science / reference / difference / noise stamps.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_area
from pydantic import Field

from ..datastore.image import MASK_BITS, Image
from ..pipeline.connections import Connections, Input, Output
from ..pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig

__all__ = ["MoffatPSF", "DifferencePSF", "DiffimResult", "align_template", "fit_moffat", "fit_psf_matching_kernel",
           "gaussian_kernel", "subtract", "detect_candidates", "make_cutouts", "difference_image", "DiffimTask",
           "FLAGS", "FWHM_SIGMA"]

FWHM_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_BAD = MASK_BITS["BAD"] | MASK_BITS["SAT"] | MASK_BITS["CR"]
# diaSrc `flags` bits: what lies under a candidate's PSF footprint.
FLAGS = {"EDGE": 1, "NO_DATA": 2, "SAT": 4, "BAD": 8}


# --------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------

def _pixel_area_deg2(wcs: WCS) -> float:
    return float(proj_plane_pixel_area(wcs.celestial))


def _where(data_id) -> str:
    return ", ".join(f"{k}={v}" for k, v in dict(data_id).items()) if data_id else "frame"


def gaussian_kernel(sigma: float, half: int) -> np.ndarray:
    """Unit-sum pixel-integrated Gaussian on a (2 half + 1)^2 grid (a delta when sigma is ~0)."""
    from scipy.special import erf

    if sigma < 1e-3:
        k = np.zeros((2 * half + 1, 2 * half + 1))
        k[half, half] = 1.0
        return k
    edges = np.arange(-half - 0.5, half + 1.0)
    g = np.diff(erf(edges / (math.sqrt(2.0) * sigma))) / 2.0
    k = np.outer(g, g)
    return k / k.sum()


def _background(data: np.ndarray, bad: np.ndarray, box: int = 64, dilate: int = 4) -> tuple[np.ndarray, float]:
    """Smooth sky map and its rms (sep), in two passes: the second with sources (above 1.5 sigma, grown by
    ``dilate`` px for their wings) masked, so crowded fields and bright halos do not lift the sky."""
    import sep
    from scipy.ndimage import binary_dilation

    ny, nx = data.shape
    b = int(max(16, min(box, ny // 2, nx // 2)))
    work = np.ascontiguousarray(np.where(bad, 0.0, data), dtype=np.float64)
    m = np.ascontiguousarray(bad)
    bkg = sep.Background(work, mask=m, bw=b, bh=b, fw=3, fh=3)
    try:
        _, seg = sep.extract(work - bkg.back(), 1.5, err=bkg.globalrms, mask=m, minarea=5, segmentation_map=True)
    except Exception:  # too many sources for sep's buffers: keep the first pass
        return bkg.back(), float(bkg.globalrms)
    src = binary_dilation(seg > 0, iterations=dilate) if dilate else seg > 0
    if np.mean(src[~bad]) < 0.75 if (~bad).any() else False:
        bkg = sep.Background(work, mask=np.ascontiguousarray(bad | src), bw=b, bh=b, fw=3, fh=3)
    return bkg.back(), float(bkg.globalrms)


def _difference_sky(diff, bad, sci, var_s, tmpl, var_t, fwhm, box) -> np.ndarray:
    """Smooth residual sky of the difference (the two images' sky estimates never agree exactly), measured
    away from every source of either image.

    sep's mesh drops cells that are mostly masked; on a small frame whose footprint and sources mask most of
    every cell it returns a flat zero, so whatever constant the mesh leaves (sigma-clipped median of the
    unmasked pixels) is taken out as well. The mesh stays coarse: a fine one would eat faint point sources
    that no mask covers (below 3 sigma a pixel), the very transients the difference is for."""
    import sep
    from astropy.stats import sigma_clipped_stats
    from scipy.ndimage import binary_dilation

    grow = int(max(2, round(1.5 * fwhm)))
    sci_src = np.abs(sci) > 3 * np.sqrt(var_s)
    tmpl_src = np.abs(tmpl) > 3 * np.sqrt(np.maximum(var_t, 1e-30))
    m = bad | binary_dilation(sci_src | tmpl_src, iterations=grow)
    if (~bad).any() and np.mean(m[~bad]) > 0.8:
        # a template whose variance understates its noise marks nearly every pixel as a source
        m = bad | binary_dilation(sci_src, iterations=grow)
    if (~m).sum() < 100:
        return np.zeros_like(diff)
    ny, nx = diff.shape
    b = int(max(16, min(box, ny // 2, nx // 2)))
    sky = sep.Background(np.ascontiguousarray(np.where(m, 0.0, diff)), mask=np.ascontiguousarray(m),
                         bw=b, bh=b, fw=3, fh=3).back()
    rest = sigma_clipped_stats((diff - sky)[~m], sigma=3.0, maxiters=10)[1]
    return sky + rest


def psf_fwhm(psf: np.ndarray, iterations: int = 30) -> float:
    """FWHM (px) of a PSF image from adaptive (Gaussian-weighted) second moments: the weight's width
    converges to the source's, so it measures the core as a Gaussian would, robust to noise and wings."""
    ny, nx = psf.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    tot = psf.sum()
    if tot <= 0:
        return float("nan")
    x0, y0 = float((psf * xx).sum() / tot), float((psf * yy).sum() / tot)
    sig2 = 4.0
    for _ in range(iterations):
        w = psf * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sig2))
        sw = w.sum()
        if sw <= 0:
            return float("nan")
        x0, y0 = float((w * xx).sum() / sw), float((w * yy).sum() / sw)
        m = float((w * ((xx - x0) ** 2 + (yy - y0) ** 2)).sum() / sw) / 2.0  # per axis
        new = float(np.clip(2.0 * m, 0.04, (min(nx, ny) / 2.0) ** 2))
        if abs(new - sig2) < 1e-4 * sig2:
            sig2 = new
            break
        sig2 = new
    return FWHM_SIGMA * math.sqrt(sig2)


# --------------------------------------------------------------------------------------------------------------
# PSF model
# --------------------------------------------------------------------------------------------------------------

_GL3_X, _GL3_W = np.polynomial.legendre.leggauss(4)
_SUBX = _GL3_X / 2.0
_SUBW = np.outer(_GL3_W / 2.0, _GL3_W / 2.0).ravel()


def _moffat_pixels(dx: np.ndarray, dy: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Moffat (unit total flux over the plane) integrated over the pixels whose centres are at (dx, dy) from
    the source (4x4 Gauss-Legendre per pixel, enough for FWHM ~1.5 px)."""
    u = dx[..., None, None] + _SUBX[:, None]
    v = dy[..., None, None] + _SUBX[None, :]
    r2 = (u * u + v * v) / (alpha * alpha)
    prof = (beta - 1.0) / (math.pi * alpha * alpha) * (1.0 + r2) ** (-beta)
    return (prof.reshape(prof.shape[:-2] + (-1,)) * _SUBW).sum(-1)


@dataclass(frozen=True)
class MoffatPSF:
    """Circular Moffat PSF: FWHM (px) and beta; ``source`` says where it came from (fit / header)."""

    fwhm: float
    beta: float = 3.0
    source: str = "header"
    n_stars: int = 0

    @property
    def alpha(self) -> float:
        return self.fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / self.beta) - 1.0))

    def stamp(self, half: int, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
        """Pixel-integrated PSF on a (2 half + 1)^2 grid, source at (dx, dy) from the centre pixel; sums to the
        fraction of the total flux inside the stamp (< 1), so fitted fluxes are totals."""
        yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(float)
        return _moffat_pixels(xx - dx, yy - dy, self.alpha, self.beta)


def fit_moffat(image: np.ndarray, var: np.ndarray, bad: np.ndarray, xy, fwhm_guess: float, *, max_stars: int = 8,
               beta_guess: float = 3.0, beta_range: tuple[float, float] = (1.8, 6.0), min_stars_for_beta: int = 3,
               source: str = "fit") -> MoffatPSF | None:
    """Least-squares pixel-integrated Moffat (shared FWHM and beta; per star flux, centre, sky) to star stamps.

    The wings (beta) need several stars to be measured; with fewer than ``min_stars_for_beta`` beta stays at
    ``beta_guess`` (seeing profiles have beta ~ 2.5-4.5) and only the FWHM is fitted. None when no star gives
    a usable stamp or the fit does not converge to a sensible PSF.
    """
    from scipy.optimize import least_squares

    half = int(np.clip(round(2.5 * fwhm_guess), 4, 12))
    ny, nx = image.shape
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(float)
    stamps = []
    for x, y in list(xy)[:max_stars]:
        ix, iy = int(round(x)), int(round(y))
        if ix < half or iy < half or ix >= nx - half or iy >= ny - half:
            continue
        sl = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
        ok = ~bad[sl] & np.isfinite(var[sl]) & (var[sl] > 0)
        if ok.mean() < 0.8:
            continue
        d = image[sl]
        stamps.append((d, np.where(ok, 1.0 / np.sqrt(np.where(ok, var[sl], 1.0)), 0.0), x - ix, y - iy,
                       max(float(d.sum()), 1.0)))
    if not stamps:
        return None
    free_beta = len(stamps) >= min_stars_for_beta
    a0 = fwhm_guess / (2.0 * math.sqrt(2.0 ** (1.0 / beta_guess) - 1.0))
    lo_b, hi_b = beta_range

    def to_beta(q):  # maps the real line onto beta_range
        return lo_b + (hi_b - lo_b) / (1.0 + math.exp(-q))

    q0 = -math.log((hi_b - lo_b) / (beta_guess - lo_b) - 1.0) if lo_b < beta_guess < hi_b else 0.0
    fits = []
    for d, w, dx0, dy0, f0 in stamps:  # one small fit per star (cheap), combined robustly below

        def resid(p, d=d, w=w):
            alpha, beta = math.exp(p[0]), (to_beta(p[5]) if free_beta else beta_guess)
            return ((p[1] * _moffat_pixels(xx - p[2], yy - p[3], alpha, beta) + p[4] - d) * w).ravel()

        p0 = [math.log(a0), f0, dx0, dy0, 0.0] + ([q0] if free_beta else [])
        try:
            r = least_squares(resid, p0, method="lm", x_scale="jac", max_nfev=300)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if r.success and abs(r.x[2]) < 2 and abs(r.x[3]) < 2 and r.x[1] > 0:
            fits.append((math.exp(r.x[0]), to_beta(r.x[5]) if free_beta else beta_guess))
    if not fits:
        return None
    fw = [2.0 * a * math.sqrt(2.0 ** (1.0 / b) - 1.0) for a, b in fits]
    beta = float(np.median([b for _, b in fits]))
    fwhm_med = float(np.median(fw))
    alpha = fwhm_med / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    fwhm = 2.0 * alpha * math.sqrt(2.0 ** (1.0 / beta) - 1.0)
    if not (np.isfinite(fwhm) and 0.5 < fwhm < 40.0):
        return None
    return MoffatPSF(float(fwhm), float(beta), source, len(fits))


@dataclass
class DifferencePSF:
    """A science point source as it appears in the difference: the science PSF, convolved by the kernel (and
    divided by its sum) when the science frame was the image convolved."""

    science: MoffatPSF
    kernel: np.ndarray | None = None
    half: int = 10
    _centred: np.ndarray | None = field(default=None, repr=False)

    def stamp(self, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
        """The PSF on a (2 half + 1)^2 grid with the source at (dx, dy) px from the centre pixel. The kernel-
        convolved PSF is well sampled, so sub-pixel offsets of it are spline shifts of the centred one."""
        if self._centred is None:
            if self.kernel is None:
                self._centred = self.science.stamp(self.half)
            else:
                from scipy.signal import fftconvolve

                hk = self.kernel.shape[0] // 2
                big = self.science.stamp(self.half + hk)
                self._centred = fftconvolve(big, self.kernel / self.kernel.sum(), mode="valid")
        if abs(dx) < 1e-6 and abs(dy) < 1e-6:
            return self._centred
        if self.kernel is None:
            return self.science.stamp(self.half, dx, dy)
        from scipy.ndimage import shift as ndshift

        return ndshift(self._centred, (dy, dx), order=3, mode="constant")

    @property
    def fwhm(self) -> float:
        return psf_fwhm(self.stamp())


# --------------------------------------------------------------------------------------------------------------
# Alignment and flux scaling
# --------------------------------------------------------------------------------------------------------------

def _crop_to_footprint(twcs: WCS, tshape, wcs: WCS, shape, margin: int = 4):
    """(y0, y1, x0, x1) of the template pixels under the science frame (plus a margin): resampling only those
    makes the cost follow the science frame, not the (possibly much larger) template grid."""
    ny, nx = shape
    yy, xx = np.meshgrid(np.linspace(-0.5, ny - 0.5, 9), np.linspace(-0.5, nx - 0.5, 9), indexing="ij")
    ra, dec = wcs.wcs_pix2world(xx.ravel(), yy.ravel(), 0)
    tx, ty = twcs.wcs_world2pix(ra, dec, 0)
    tny, tnx = tshape
    if not (np.all(np.isfinite(tx)) and np.all(np.isfinite(ty))):
        return 0, tny, 0, tnx
    x0 = int(np.clip(np.floor(tx.min()) - margin, 0, tnx))
    x1 = int(np.clip(np.ceil(tx.max()) + margin + 1, 0, tnx))
    y0 = int(np.clip(np.floor(ty.min()) - margin, 0, tny))
    y1 = int(np.clip(np.ceil(ty.max()) + margin + 1, 0, tny))
    return y0, y1, x0, x1


def align_template(template: Image, wcs: WCS, shape: tuple[int, int], scale: float,
                   resample: str = "exact") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Template resampled onto (wcs, shape), flux per output pixel times ``scale``; its variance; no-data mask.

    ``exact`` (``reproject_exact``: each output pixel integrates the input pixels it overlaps) is what a
    coarser detector would have recorded, so it blurs least and conserves flux; ``interp`` (bicubic) is faster
    but aliases when the science pixels are much coarser. The variance plane is resampled bilinearly: the variance of a sum of
    ``r`` input pixels is ``r`` times their mean (``r`` = output / input pixel area); a finer output pixel
    (r < 1) carries r of an input pixel, so r^2.
    """
    from reproject import reproject_exact, reproject_interp

    twcs = template.wcs
    if twcs is None:
        raise ValueError("templateCoadd has no celestial WCS")
    y0, y1, x0, x1 = _crop_to_footprint(twcs, template.shape, wcs, shape)
    if y1 - y0 < 2 or x1 - x0 < 2:
        return np.zeros(shape), np.zeros(shape), np.ones(shape, bool)
    twcs = twcs.slice((slice(y0, y1), slice(x0, x1)))
    data = np.asarray(template.data[y0:y1, x0:x1], dtype=np.float64).copy()
    nodata = ~np.isfinite(data)
    if template.mask is not None:
        nodata |= (np.asarray(template.mask[y0:y1, x0:x1]) & MASK_BITS["NO_DATA"]) != 0
    if template.variance is not None:
        var = np.asarray(template.variance[y0:y1, x0:x1], dtype=np.float64).copy()
        nodata |= ~np.isfinite(var)
    else:
        from astropy.stats import sigma_clipped_stats

        _, _, std = sigma_clipped_stats(data[~nodata], sigma=3.0, maxiters=5)
        var = np.full(data.shape, std**2)
    data[nodata] = np.nan
    var[nodata] = np.nan
    r = _pixel_area_deg2(wcs) / _pixel_area_deg2(twcs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if resample == "exact":
            out, foot = reproject_exact((data, twcs), wcs, shape_out=tuple(shape))
        elif resample == "interp":
            out, foot = reproject_interp((data, twcs), wcs, shape_out=tuple(shape), order="bicubic")
        else:
            raise ValueError(f"unknown resampling {resample!r}: exact or interp")
        vout, _ = reproject_interp((var, twcs), wcs, shape_out=tuple(shape), order="bilinear")
    t = out * r * scale
    v = vout * r * min(r, 1.0) * scale**2
    bad = ~(np.isfinite(t) & np.isfinite(v)) | (np.asarray(foot) < 0.999)
    t[bad] = 0.0
    v[bad] = 0.0
    return t, v, bad


# --------------------------------------------------------------------------------------------------------------
# PSF matching
# --------------------------------------------------------------------------------------------------------------

def _al_basis(half: int, sigmas, degrees) -> np.ndarray:
    """Alard-Lupton basis: Gaussians of the given sigmas times x^i y^j (i + j <= degree), unit L2 norm."""
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(float)
    u, v = xx / half, yy / half
    out = []
    for sig, deg in zip(sigmas, degrees):
        g = gaussian_kernel(max(sig, 0.3), half)
        for i in range(deg + 1):
            for j in range(deg + 1 - i):
                b = g * u**i * v**j
                out.append(b / np.sqrt(np.sum(b * b)))
    return np.array(out)


def _select_stars(sci, tmpl, bad, var_s, max_stars: int, min_snr: float, saturation: float | None,
                  fwhm_guess: float, margin: int = 3):
    """Bright, unmasked, unsaturated sources of the science frame present in the template at a similar
    brightness (a transient, a cosmic ray or a mover cannot anchor the kernel), brightest first."""
    import sep

    ny, nx = sci.shape
    rms = float(np.sqrt(np.median(var_s[~bad]))) if (~bad).any() else 1.0
    objs = sep.extract(np.ascontiguousarray(sci), 5.0, err=rms, mask=np.ascontiguousarray(bad), minarea=5)
    if len(objs) == 0:
        return objs, np.zeros(0, bool)
    f, ferr, _ = sep.sum_circle(np.ascontiguousarray(sci), objs["x"], objs["y"], 1.5 * fwhm_guess,
                                var=np.ascontiguousarray(var_s))
    keep = (f > min_snr * ferr) & ((objs["flag"] & 0x10) == 0)
    if saturation is not None:
        keep &= objs["peak"] < 0.8 * saturation
    ix, iy = np.rint(objs["x"]).astype(int), np.rint(objs["y"]).astype(int)
    keep &= (ix >= margin) & (ix < nx - margin) & (iy >= margin) & (iy < ny - margin)
    good = []
    for i in np.flatnonzero(keep)[np.argsort(-f[keep])]:
        core = (slice(iy[i] - 2, iy[i] + 3), slice(ix[i] - 2, ix[i] + 3))
        if bad[core].any():
            continue
        tc, sc = tmpl[core].sum(), sci[core].sum()
        if not (0.3 * sc < tc < 3.0 * sc):
            continue
        good.append(i)
        if len(good) >= max_stars:
            break
    return objs[np.array(good, int)], _isolated(objs, np.array(good, int), 2.5 * fwhm_guess + 2.0)


def _isolated(objs, idx, radius: float) -> np.ndarray:
    """True for sources with no other detection brighter than 1 % of them within ``radius`` px (PSF stars)."""
    out = np.ones(len(idx), bool)
    for k, i in enumerate(idx):
        d = np.hypot(objs["x"] - objs["x"][i], objs["y"] - objs["y"][i])
        out[k] = not np.any((d > 0) & (d < radius) & (objs["flux"] > 0.01 * objs["flux"][i]))
    return out


def _template_stars(tmpl, bad, var_t, fwhm_guess: float, max_stars=25, margin=3):
    """Bright sources of the (deep) template, for its PSF when the science frame has too few."""
    import sep

    rms = float(np.sqrt(np.median(var_t[~bad]))) if (~bad).any() else 1.0
    if not np.isfinite(rms) or rms <= 0:
        return []
    objs = sep.extract(np.ascontiguousarray(tmpl), 10.0, err=rms, mask=np.ascontiguousarray(bad), minarea=5)
    ny, nx = tmpl.shape
    ok = (objs["x"] > margin) & (objs["x"] < nx - margin) & (objs["y"] > margin) & (objs["y"] < ny - margin)
    ok &= ((objs["flag"] & 0x10) == 0) & _isolated(objs, np.arange(len(objs)), 2.5 * fwhm_guess + 2.0)
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(-objs["flux"][idx])][:max_stars]
    return list(zip(objs["x"][order], objs["y"][order]))


def fit_psf_matching_kernel(ref, target, var_ref, var_target, bad, centres, half: int, stamp_half: int, sigmas,
                            degrees=(4, 3, 2), clip: float = 3.0, basis: np.ndarray | None = None):
    """Least-squares kernel K (and sky offset b) with target ~ K * ref + b over stamps around ``centres``.

    Stamps may cross the image edge or masked pixels: those target pixels (and any whose kernel footprint in
    ``ref`` touches one) get zero weight. Weights use the variance of the residual, var_target + K^2 * var_ref
    (re-evaluated each iteration), so the chi2 of the two matching directions can be compared. Stamps whose
    chi2 is far above the median (a variable star, a blend) are dropped and the fit repeated.

    ``basis`` replaces the Alard-Lupton basis (a single Gaussian fits only the flux ratio).
    Returns (kernel, background, chi2 per degree of freedom, number of stamps used).
    """
    from scipy.ndimage import binary_dilation
    from scipy.signal import fftconvolve

    P = stamp_half + half
    refp = np.pad(ref, P)
    tp = np.pad(target, P)
    vrp = np.pad(var_ref, P)
    vtp = np.pad(var_target, P, constant_values=np.inf)
    badp = np.pad(bad, P, constant_values=True)
    unusable = binary_dilation(badp, np.ones((2 * half + 1, 2 * half + 1), bool)) | ~np.isfinite(vtp)
    refp = np.where(badp, 0.0, refp)
    basis = _al_basis(half, sigmas, degrees) if basis is None else np.asarray(basis, float)
    nb = len(basis)
    stamps = []
    for (cx, cy) in centres:
        cx, cy = int(cx) + P, int(cy) + P
        r = refp[cy - P:cy + P + 1, cx - P:cx + P + 1]
        vr = vrp[cy - P:cy + P + 1, cx - P:cx + P + 1]
        sl = (slice(cy - stamp_half, cy + stamp_half + 1), slice(cx - stamp_half, cx + stamp_half + 1))
        ok = ~unusable[sl].ravel()
        if ok.mean() < 0.3:
            continue
        conv = fftconvolve(r[None], basis, mode="valid", axes=(1, 2)).reshape(nb, -1)[:, ok]
        a = np.column_stack([conv.T, np.ones(ok.sum())])
        stamps.append({"a": a, "t": tp[sl].ravel()[ok], "vt": vtp[sl].ravel()[ok], "vr": vr, "ok": ok})
    if not stamps:
        raise ValueError("no usable kernel stamps")

    def weights(kern):
        for st in stamps:
            vk = fftconvolve(st["vr"], kern**2, mode="valid").ravel()[st["ok"]]
            st["w"] = 1.0 / np.sqrt(np.maximum(st["vt"] + np.clip(vk, 0, None), 1e-20))

    use = np.ones(len(stamps), bool)
    chi = np.zeros(len(stamps))
    kern = gaussian_kernel(0.0, half)
    coef = None
    for it in range(4):
        weights(kern)
        # normal equations, accumulated per stamp (A^T W A is tiny: basis size squared)
        M = np.zeros((nb + 1, nb + 1))
        v = np.zeros(nb + 1)
        for st, u in zip(stamps, use):
            if u:
                aw = st["a"] * (st["w"] ** 2)[:, None]
                M += aw.T @ st["a"]
                v += aw.T @ st["t"]
        d = np.sqrt(np.maximum(np.diag(M), 1e-300))
        coef = np.linalg.lstsq(M / np.outer(d, d), v / d, rcond=1e-12)[0] / d
        kern = np.tensordot(coef[:nb], basis, axes=1)
        for k, st in enumerate(stamps):
            chi[k] = float(np.mean(((st["a"] @ coef - st["t"]) * st["w"]) ** 2))
        new = use & (chi <= clip * max(float(np.median(chi[use])), 1.0))
        if new.sum() >= 1 and not np.array_equal(new, use) and it < 3:
            use = new
    weights(kern)
    npix = sum(len(st["t"]) for st, u in zip(stamps, use) if u)
    ss = sum(float(np.sum(((st["a"] @ coef - st["t"]) * st["w"]) ** 2)) for st, u in zip(stamps, use) if u)
    return kern, float(coef[nb]), ss / max(1, npix - nb - 1), int(use.sum())


# --------------------------------------------------------------------------------------------------------------
# The whole subtraction
# --------------------------------------------------------------------------------------------------------------

@dataclass
class DiffimResult:
    """What ``subtract`` returns: the difference and everything needed to measure it and cut it out."""

    difference: np.ndarray
    variance: np.ndarray          # inf where masked
    bad: np.ndarray               # masked in the difference (no data, bad science pixels, kernel-grown edges)
    nodata: np.ndarray
    science: np.ndarray           # background-subtracted science (ADU)
    template: np.ndarray          # aligned template in science units, not convolved
    sci_var: np.ndarray
    tmpl_var: np.ndarray
    smask: np.ndarray
    kernel: np.ndarray
    kernel_sum: float
    kernel_bg: float
    kernel_chi2: float
    kernel_stars: int
    method: str                   # alard-lupton | gaussian
    convolved: str                # template | science
    psf_science: MoffatPSF
    psf_template: MoffatPSF
    psf: DifferencePSF
    zp: float
    template_scale: float
    sky_rms: float
    noise_factor: float = 1.0

    @property
    def fwhm_science(self) -> float:
        return self.psf_science.fwhm

    @property
    def fwhm_template(self) -> float:
        return self.psf_template.fwhm

    @property
    def psf_fwhm(self) -> float:
        return self.psf.science.fwhm if self.psf.kernel is None else self.fwhm_template


def subtract(science: Image, template: Image, *, science_zp: float | None = None, template_zp: float | None = None,
             kernel_stars: int = 25, kernel_min_stars: int = 2, kernel_min_snr: float = 20.0,
             saturation: float | None = None, background_box: int = 64, degrees=(4, 3, 2),
             max_kernel_ratio: float = 1.25, difference_background: bool = True, resample: str = "exact",
             psf_beta: float = 3.0) -> DiffimResult:
    """Science minus the PSF-matched, flux-scaled template, on the science frame's grid, with its variance."""
    from scipy.signal import fftconvolve

    wcs = science.wcs
    if wcs is None:
        raise ValueError("calexp has no celestial WCS")
    zp_s = float(science_zp if science_zp is not None else science.header["PHOTZP"])
    zp_t = float(template_zp if template_zp is not None else template.header.get("PHOTZP", 25.0))
    scale = 10.0 ** (0.4 * (zp_s - zp_t))
    shape = science.shape
    sci_raw = np.asarray(science.data, dtype=np.float64)
    smask = np.zeros(shape, np.int32) if science.mask is None else np.asarray(science.mask, np.int32)
    s_nodata = ~np.isfinite(sci_raw) | ((smask & MASK_BITS["NO_DATA"]) != 0)
    s_bad = ((smask & _BAD) != 0)
    sky, sky_rms = _background(np.where(s_nodata, 0.0, sci_raw), s_nodata | s_bad, background_box)
    sci = np.where(s_nodata, 0.0, sci_raw - sky)
    if science.variance is not None:
        var_s = np.asarray(science.variance, dtype=np.float64).copy()
        var_s[~np.isfinite(var_s) | (var_s <= 0)] = sky_rms**2
    else:
        var_s = np.full(shape, sky_rms**2) + np.clip(sci, 0, None) / float(science.header.get("GAIN", 1.0))
    tmpl, var_t, t_nodata = align_template(template, wcs, shape, scale, resample)
    nodata = s_nodata | t_nodata
    if (~nodata).sum() < 0.02 * nodata.size or (~nodata).sum() < 400:
        raise NoWorkFound(f"template covers only {int((~nodata).sum())} px of the frame")
    # the co-add is sky-subtracted already; remove what is left the same way as for the science frame
    tsky, _ = _background(tmpl, t_nodata, background_box)
    tmpl = np.where(t_nodata, 0.0, tmpl - tsky)
    bad = nodata | s_bad

    # PSFs: Moffats fitted to stars of each image (the template is deep, its own stars suffice)
    fwhm_hdr = float(science.header.get("FWHMPIX", 0.0) or 0.0)
    guess = fwhm_hdr if fwhm_hdr > 0 else 3.0
    beta_hdr = float(science.header.get("PSFBETA", 0.0) or 0.0)
    if 1.5 < beta_hdr < 10.0:  # calibrate's own Moffat fit: the best prior for a sparse frame
        psf_beta = beta_hdr
    objs, iso = _select_stars(sci, tmpl, bad, var_s, kernel_stars, kernel_min_snr, saturation, guess)
    xy = list(zip(objs["x"][iso], objs["y"][iso]))
    psf_s = fit_moffat(sci, var_s, bad, xy, guess, beta_guess=psf_beta) if xy else None
    if psf_s is None:
        psf_s = MoffatPSF(guess, psf_beta, "header" if fwhm_hdr > 0 else "default")
    th = float(template.header.get("FWHMPIX", 0.0) or 0.0)
    t_guess = th * math.sqrt(_pixel_area_deg2(template.wcs) / _pixel_area_deg2(wcs)) if th > 0 else psf_s.fwhm
    txy = xy if len(xy) >= 4 else _template_stars(tmpl, bad, var_t, max(t_guess, 1.0))
    psf_t = fit_moffat(tmpl, var_t + 1e-12, bad, txy, max(t_guess, 1.0)) if txy else None
    if psf_t is None:
        psf_t = MoffatPSF(max(t_guess, 0.5), psf_beta, "header" if th > 0 else "science")
    fwhm_s, fwhm_t = psf_s.fwhm, psf_t.fwhm

    # the matching kernel
    sig_s, sig_t = fwhm_s / FWHM_SIGMA, fwhm_t / FWHM_SIGMA
    sig_k = math.sqrt(abs(sig_s**2 - sig_t**2))
    base = max(sig_k, 0.5 * min(sig_s, sig_t), 0.5)
    sigmas = (0.5 * base, base, 2.0 * base)
    half_k = int(np.clip(math.ceil(3.0 * sigmas[2]), 4, 15))
    stamp_half = int(np.clip(round(2.0 * max(fwhm_s, fwhm_t)), 6, 20))
    centres = list(zip(np.rint(objs["x"]).astype(int), np.rint(objs["y"]).astype(int)))
    n_c = len(centres)
    degs = tuple(degrees) if n_c >= 6 else (tuple(min(d, 2) for d in degrees) if n_c >= 3 else (1, 0, 0))
    convolve_template = fwhm_t <= fwhm_s
    method, chi2, nstars, bgk, kern = "gaussian", float("nan"), 0, 0.0, None
    if n_c >= kernel_min_stars:
        fits_ = {}
        ratio = fwhm_t / fwhm_s
        directions = (True, False) if 0.75 < ratio < 1.33 else (convolve_template,)
        for conv_t in directions:
            ref, target, vr, vt = (tmpl, sci, var_t, var_s) if conv_t else (sci, tmpl, var_s, var_t)
            try:
                fits_[conv_t] = fit_psf_matching_kernel(ref, target, vr, vt, bad, centres, half_k, stamp_half,
                                                        sigmas, degs)
            except (ValueError, np.linalg.LinAlgError):
                continue
        # the Gaussian from the two FWHMs, its amplitude fitted, competes on the same stamps
        ref, target, vr, vt = (tmpl, sci, var_t, var_s) if convolve_template else (sci, tmpl, var_s, var_t)
        try:
            g = fit_psf_matching_kernel(ref, target, vr, vt, bad, centres, half_k, stamp_half, sigmas,
                                        basis=gaussian_kernel(sig_k, half_k)[None])
            fits_[("gaussian-fit", convolve_template)] = g
        except (ValueError, np.linalg.LinAlgError):
            pass
        # a kernel whose sum is far from the zero-points' ratio fitted something else than stars
        fits_ = {k: v for k, v in fits_.items()
                 if np.isfinite(v[0]).all() and 1.0 / max_kernel_ratio < v[0].sum() < max_kernel_ratio}
        if fits_:
            best = min(fits_, key=lambda k: fits_[k][2])
            kern, bgk, chi2, nstars = fits_[best]
            method, convolve_template = (best if isinstance(best, tuple) else ("alard-lupton", best))
    if kern is None:
        kern = gaussian_kernel(sig_k, half_k)
        bgk = 0.0
    ksum = float(kern.sum())
    grow = np.ones((2 * half_k + 1, 2 * half_k + 1))
    near_nodata = fftconvolve(nodata.astype(float), grow, mode="same") > 0.5
    psf_half = int(np.clip(math.ceil(3.0 * max(fwhm_s, fwhm_t)), 6, 20))
    if convolve_template:
        diff = sci - fftconvolve(tmpl, kern, mode="same") - bgk
        var_d = var_s + fftconvolve(var_t, kern**2, mode="same")
        psf = DifferencePSF(psf_s, None, psf_half)
    else:
        diff = (fftconvolve(sci, kern, mode="same") + bgk - tmpl) / ksum
        var_d = (fftconvolve(var_s, kern**2, mode="same") + var_t) / ksum**2
        psf = DifferencePSF(psf_s, kern, psf_half)
    bad_d = bad | near_nodata
    if difference_background and (~bad_d).sum() > 400:
        diff = diff - _difference_sky(diff, bad_d, sci, var_s, tmpl, var_t, max(fwhm_s, fwhm_t), background_box)
    var_d = np.where(bad_d | ~np.isfinite(var_d) | (var_d <= 0), np.inf, var_d)
    diff = np.where(bad_d, 0.0, diff)
    return DiffimResult(diff, var_d, bad_d, nodata, sci, tmpl, var_s, var_t, smask, kern, ksum, bgk, chi2, nstars,
                        method, "template" if convolve_template else "science", psf_s, psf_t, psf, zp_s, scale,
                        sky_rms)


# --------------------------------------------------------------------------------------------------------------
# Candidates
# --------------------------------------------------------------------------------------------------------------

def psf_photometry(diff: np.ndarray, ivar: np.ndarray, psf: DifferencePSF, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Linear PSF-fit flux (a total flux: the model is normalised over the plane) and its error at each (x, y)."""
    h = psf.half
    pad = h + 1
    dp = np.pad(diff, pad)
    wp = np.pad(ivar, pad)
    flux = np.full(len(x), np.nan)
    err = np.full(len(x), np.nan)
    ny, nx = diff.shape
    for k, (xx, yy) in enumerate(zip(x, y)):
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
    return float(np.clip(1.4826 * np.median(np.abs(chi - np.median(chi))), 0.5, 20.0))


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
    for k, (x0, y0) in enumerate(zip(x, y)):
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
    shape = np.vstack([moments(s * diff, [x], [y], sig) for s, x, y in zip(sign[idx], xw[idx], yw[idx])])
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
    for k, (xx, yy) in enumerate(zip(x, y)):
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
    for i, (x, y) in enumerate(zip(table["x"], table["y"])):
        ix, iy = int(round(float(x))), int(round(float(y)))
        for k, p in padded.items():
            out[k][i] = p[iy:iy + size, ix:ix + size]
    out["id"] = np.asarray(table["id"], np.int64) if n else np.zeros(0, np.int64)
    out["x"] = np.asarray(table["x"], np.float64) if n else np.zeros(0)
    out["y"] = np.asarray(table["y"], np.float64) if n else np.zeros(0)
    return out


def difference_image(science: Image, template: Image, *, threshold: float = 5.0, snr_min: float = 5.0,
                     stamp_size: int = 31, min_area: int = 3, noise_seed: int = 0, **subtract_options):
    """Subtract, calibrate the noise, detect, cut out: (diff Image, candidate Table, cutouts dict, result)."""
    res = subtract(science, template, **subtract_options)
    res.noise_factor = calibrate_noise(res, seed=noise_seed)
    cands = detect_candidates(res, science.wcs, threshold=threshold, snr_min=snr_min, min_area=min_area)
    cutouts = make_cutouts(res, cands, stamp_size)
    header = science.header.copy()
    header["PHOTZP"] = (res.zp, "mag = PHOTZP - 2.5 log10(flux), science units")
    header["DIFFCONV"] = (res.convolved, "image convolved by the PSF-matching kernel")
    header["KERNMETH"] = (res.method, "PSF-matching kernel")
    header["KERNSUM"] = (res.kernel_sum, "kernel sum (flux ratio check)")
    header["KERNSTAR"] = (res.kernel_stars, "stars used for the kernel fit")
    header["KERNCHI2"] = (res.kernel_chi2 if np.isfinite(res.kernel_chi2) else -1.0, "kernel fit chi2/dof")
    header["FWHMSCI"] = (res.fwhm_science, "[px] science PSF FWHM (Moffat)")
    header["BETASCI"] = (res.psf_science.beta, "science PSF Moffat beta")
    header["PSFSRC"] = (res.psf_science.source, "science PSF from: fit / header / default")
    header["FWHMTMPL"] = (res.fwhm_template, "[px] template PSF FWHM, science grid")
    header["PSFFWHM"] = (res.psf_fwhm, "[px] difference image PSF FWHM")
    header["NOISECOR"] = (res.noise_factor, "PSF-flux error factor (correlated noise)")
    header["TMPLSCAL"] = (res.template_scale, "template flux scale to science zp")
    mask = res.smask.copy()
    mask[res.nodata] |= MASK_BITS["NO_DATA"]
    var = np.where(np.isfinite(res.variance), res.variance, 0.0).astype(np.float32)
    diff_image = Image(res.difference.astype(np.float32), header, mask, var)
    return diff_image, cands, cutouts, res


# --------------------------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------------------------

class DiffimConfig(TaskConfig):
    threshold: float = Field(5.0, gt=0, description="Detection threshold (sigma) of the matched-filtered difference.")
    snr_min: float = Field(5.0, gt=0, description="Keep candidates whose PSF-fit |S/N| (noise-calibrated) is at least this.")
    min_area: int = Field(3, ge=1, description="Fewest connected pixels above threshold for a detection.")
    stamp_size: int = Field(31, ge=9, description="Cutout side (pixels, odd) stored per candidate.")
    kernel_stars: int = Field(25, ge=1, description="Most stars used to fit the PSF-matching kernel.")
    kernel_min_stars: int = Field(2, ge=1, description="Fewer usable stars than this: Gaussian kernel from the FWHMs.")
    kernel_min_snr: float = Field(20.0, gt=0, description="Least S/N of a kernel star.")
    degrees: tuple[int, int, int] = Field((4, 3, 2), description="Polynomial degrees of the three Gaussian kernel "
                                          "basis families (narrow, matched, wide).")
    background_box: int = Field(64, ge=16, description="sep background mesh (pixels).")
    template_zp: float | None = Field(None, description="Template zero-point if its header has no PHOTZP.")
    saturation_adu: float | None = Field(None, description="Science saturation level (ADU) for choosing kernel stars; "
                                         "default: header SATURATE, else the SAT mask alone.")
    resample: str = Field("exact", pattern="^(exact|interp)$", description="Template resampling onto the science "
                          "grid: exact (flux-conserving pixel overlap) or interp (bicubic, faster).")
    psf_beta: float = Field(3.0, gt=1, description="Moffat beta assumed when neither the header (PSFBETA) nor "
                            "enough stars give it.")
    max_kernel_ratio: float = Field(1.25, gt=1, description="Reject fitted kernels whose sum (flux ratio) is off "
                                    "by more than this factor from the zero-points' prediction.")
    difference_background: bool = Field(True, description="Subtract the smooth residual sky of the difference.")


class DiffimConnections(Connections):
    calexp = Input("calexp", ("instrument", "exposure"), "Image", doc="Calibrated science frame (ADU, WCS, PHOTZP).")
    template = Input("templateCoadd", ("field", "band"), "Image", doc="Deep reference at PHOTZP 25 on the field grid.")
    diff = Output("diffExp", ("instrument", "exposure"), "Image", doc="Science minus matched template, science units.")
    sources = Output("diaSrc", ("instrument", "exposure"), "Table", doc="Candidates in the difference.")
    cutouts = Output("diaCutouts", ("instrument", "exposure"), "NumpyArrays", doc="Science/reference/difference stamps.")


class DiffimTask(PipelineTask):
    """Difference image of one exposure against its field's template, its 5-sigma candidates and their stamps."""

    dimensions = ("instrument", "exposure")
    Config = DiffimConfig
    Connections = DiffimConnections
    resources = Resources(cores=1, memory_mb=1024, walltime_min=10)

    def run(self, calexp, template, data_id=None):
        where = _where(data_id)
        c = self.config
        if "PHOTZP" not in calexp.header:
            raise ValueError(f"{where}: calexp has no PHOTZP header card (run calibrate first)")
        if calexp.wcs is None:
            raise ValueError(f"{where}: calexp has no celestial WCS")
        if template.wcs is None:
            raise ValueError(f"{where}: templateCoadd has no celestial WCS")
        sat = c.saturation_adu if c.saturation_adu is not None else calexp.header.get("SATURATE")
        seed = int(dict(data_id).get("exposure", 0)) % (2**31) if data_id else 0
        try:
            diff, cands, cutouts, res = difference_image(
                calexp, template, threshold=c.threshold, snr_min=c.snr_min, stamp_size=c.stamp_size | 1,
                min_area=c.min_area, noise_seed=seed, template_zp=c.template_zp, kernel_stars=c.kernel_stars,
                kernel_min_stars=c.kernel_min_stars, kernel_min_snr=c.kernel_min_snr, saturation=sat,
                background_box=c.background_box, degrees=tuple(c.degrees), resample=c.resample, psf_beta=c.psf_beta,
                max_kernel_ratio=c.max_kernel_ratio, difference_background=c.difference_background)
        except NoWorkFound as exc:
            raise NoWorkFound(f"{where}: {exc}") from None
        except (ValueError, RuntimeError) as exc:
            raise type(exc)(f"{where}: {exc}") from exc
        h = calexp.header
        cands.meta.update({
            "zp": res.zp, "mjd_mid": float(h.get("MJD-MID", np.nan)), "band": str(h.get("BAND", "")),
            "instrument": str(h.get("INSTRUME", "")), "exptime": float(h.get("EXPTIME", np.nan)),
            "psf_fwhm": res.psf_fwhm, "fwhm_science": res.fwhm_science, "fwhm_template": res.fwhm_template,
            "kernel_method": res.method, "convolved": res.convolved, "kernel_sum": res.kernel_sum,
            "kernel_stars": res.kernel_stars, "noise_factor": res.noise_factor,
            "pixel_scale_arcsec": math.sqrt(_pixel_area_deg2(calexp.wcs)) * 3600.0,
        })
        if data_id:
            cands.meta["exposure"] = int(dict(data_id).get("exposure", -1))
            cands.meta["instrument"] = str(dict(data_id).get("instrument", cands.meta["instrument"]))
        self.log.info("%s: %s kernel (%d stars, sum %.3f, %s convolved), PSF FWHM %.2f px, noise x%.2f, %d candidates",
                      where, res.method, res.kernel_stars, res.kernel_sum, res.convolved, res.psf_fwhm,
                      res.noise_factor, len(cands))
        return {"diff": diff, "sources": cands, "cutouts": cutouts}
