"""Pixels: pixel-integrated Moffat PSFs on small stamps, sky, shot and read noise, ADC.

Stars are drawn on per-star stamps (vectorised over stars) and scattered into the
image with bincount, so cost scales with the number of stars, not image area x stars.
Each pixel value is the PSF *integrated* over the pixel (5x5 Gauss-Legendre), which
matters for the undersampled ota80 frames.
"""

from __future__ import annotations

import numpy as np

_N_GL = 5
_GL_X, _GL_W = np.polynomial.legendre.leggauss(_N_GL)
_SUB = _GL_X / 2.0  # sub-pixel offsets on [-0.5, 0.5]
_W2 = np.outer(_GL_W / 2.0, _GL_W / 2.0)  # weights summing to 1
_CHUNK = 48


def moffat_alpha(fwhm_px: float, beta: float) -> float:
    return fwhm_px / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def stamp_radius(fwhm_px: float) -> int:
    """Half-size of star stamps: ~6 FWHM keeps the lost Moffat wing well below 0.5%."""
    return int(np.ceil(max(6.0 * fwhm_px, 8.0)))


def star_image(shape, x, y, flux, fwhm_px: float, beta: float) -> np.ndarray:
    """Expected electrons per pixel from point sources at 0-based pixel coords (x, y).

    The Moffat is normalised over the infinite plane, so `flux` is the total flux and
    the small fraction beyond the stamp is simply lost (as a faint wing would be).
    """
    ny, nx = shape
    x, y, flux = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (x, y, flux))
    R = stamp_radius(fwhm_px)
    keep = (x > -R) & (x < nx - 1 + R) & (y > -R) & (y < ny - 1 + R) & (flux > 0)
    x, y, flux = x[keep], y[keep], flux[keep]
    pad = 2 * R + 1
    canvas = np.zeros((ny + 2 * pad) * (nx + 2 * pad))
    if len(x) == 0:
        return canvas.reshape(ny + 2 * pad, nx + 2 * pad)[pad:-pad, pad:-pad]
    alpha = moffat_alpha(fwhm_px, beta)
    norm = (beta - 1.0) / (np.pi * alpha**2)
    d = np.arange(-R, R + 1)
    for s in range(0, len(x), _CHUNK):
        xs, ys, fs = x[s:s + _CHUNK], y[s:s + _CHUNK], flux[s:s + _CHUNK]
        ix, iy = np.rint(xs).astype(int), np.rint(ys).astype(int)
        # offsets of sub-pixel nodes from the star centre: (n, S, q)
        u = (ix[:, None] + d[None, :] - xs[:, None])[:, :, None] + _SUB[None, None, :]
        v = (iy[:, None] + d[None, :] - ys[:, None])[:, :, None] + _SUB[None, None, :]
        r2 = (v[:, :, None, :, None] ** 2 + u[:, None, :, None, :] ** 2) / alpha**2  # (n, Sy, Sx, q, q)
        prof = norm * (1.0 + r2) ** (-beta)
        val = np.einsum("nyxab,ab->nyx", prof, _W2) * fs[:, None, None]
        rows = (iy[:, None] + d[None, :] + pad)[:, :, None]
        cols = (ix[:, None] + d[None, :] + pad)[:, None, :]
        flat = (rows * (nx + 2 * pad) + cols).ravel()
        canvas += np.bincount(flat, weights=val.ravel(), minlength=canvas.size)
    return canvas.reshape(ny + 2 * pad, nx + 2 * pad)[pad:-pad, pad:-pad]


def expose(rng, expected_e: np.ndarray, gain: float, read_noise: float, bias_adu: float,
           saturation_adu: float, dtype: str) -> np.ndarray:
    """Detector: Poisson(star+sky) e-, Gaussian read noise, gain, bias, ADC rounding, clipping."""
    e = rng.poisson(expected_e).astype(np.float64)
    e += rng.normal(0.0, read_noise, expected_e.shape)
    adu = np.rint(e / gain + bias_adu)
    adu = np.clip(adu, 0.0, saturation_adu)
    if dtype == "uint16":
        return adu.astype(np.uint16)
    return adu.astype(np.float32)
