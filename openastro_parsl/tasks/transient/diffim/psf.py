"""PSFs of the difference imaging: a Moffat (``astro.psf``) fitted to the stars of each image, its FWHM from
adaptive moments, and the PSF a science point source has in the difference (``DifferencePSF``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ....astro.psf import FWHM_SIGMA, MoffatPSF, moffat_alpha, moffat_fwhm, moffat_pixels

__all__ = ["DifferencePSF", "MoffatPSF", "fit_moffat", "psf_fwhm"]


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


def fit_moffat(image: np.ndarray, var: np.ndarray, bad: np.ndarray, xy, fwhm_guess: float, *, max_stars: int = 8,
               beta_guess: float = 3.0, beta_range: tuple[float, float] = (1.8, 6.0), min_stars_for_beta: int = 3,
               source: str = "fit") -> MoffatPSF | None:
    """Least-squares pixel-integrated Moffat (shared FWHM and beta; per star flux, centre, sky) to star stamps
    (4 x 4 Gauss-Legendre nodes per pixel, enough for FWHM ~1.5 px).

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
    a0 = moffat_alpha(fwhm_guess, beta_guess)
    lo_b, hi_b = beta_range

    def to_beta(q):  # maps the real line onto beta_range
        return lo_b + (hi_b - lo_b) / (1.0 + math.exp(-q))

    q0 = -math.log((hi_b - lo_b) / (beta_guess - lo_b) - 1.0) if lo_b < beta_guess < hi_b else 0.0
    fits = []
    for d, w, dx0, dy0, f0 in stamps:  # one small fit per star (cheap), combined robustly below

        def resid(p, d=d, w=w):
            alpha, beta = math.exp(p[0]), (to_beta(p[5]) if free_beta else beta_guess)
            return ((p[1] * moffat_pixels(xx - p[2], yy - p[3], alpha, beta) + p[4] - d) * w).ravel()

        p0 = [math.log(a0), f0, dx0, dy0, 0.0] + ([q0] if free_beta else [])
        try:
            r = least_squares(resid, p0, method="lm", x_scale="jac", max_nfev=300)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if r.success and abs(r.x[2]) < 2 and abs(r.x[3]) < 2 and r.x[1] > 0:
            fits.append((math.exp(r.x[0]), to_beta(r.x[5]) if free_beta else beta_guess))
    if not fits:
        return None
    fw = [moffat_fwhm(a, b) for a, b in fits]
    beta = float(np.median([b for _, b in fits]))
    fwhm_med = float(np.median(fw))
    fwhm = moffat_fwhm(moffat_alpha(fwhm_med, beta), beta)
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
