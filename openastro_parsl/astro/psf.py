"""Point-spread functions: the circular Moffat profile, integrated over pixels, and images of point sources.

One profile serves the simulator (``sim.render``), the photometric calibration (aperture corrections), the
difference imaging (PSF fits and PSF photometry) and the real/bogus training frames. They differ only in how
finely a pixel is integrated, which is a ``PixelQuadrature`` each caller chooses:

- ``PixelQuadrature.gauss_legendre(n)``: n x n Gauss-Legendre nodes per pixel, exact for polynomials of
  degree 2n - 1 across the pixel. On an undersampled Moffat (FWHM 1.5 px, beta 3) the worst pixel is off by
  1e-4 of the peak with 3 nodes, 2e-6 with 4, 3e-7 with 5: what the training frames (3), the difference
  imaging (4) and the simulator (5) use.
- ``PixelQuadrature.midpoint(n)``: n x n equal sub-pixel samples (6e-3 of the peak with 5 x 5 on that
  profile), the photometric calibration's choice (5 below 2.5 px FWHM, 3 below 5 px, else 1; see
  ``tasks.photometry.psf``): less accurate at equal cost, but its aperture corrections and zero-points were
  validated with it.

Integrating (not sampling) the profile matters on undersampled frames, where a sampled model reads the FWHM
several per cent too wide.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["FWHM_SIGMA", "MoffatPSF", "PixelQuadrature", "moffat_alpha", "moffat_fwhm", "moffat_pixels",
           "moffat_profile", "render_moffat_stars"]

FWHM_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
"""FWHM / sigma of a Gaussian (2.3548...)."""


def moffat_alpha(fwhm: float, beta: float) -> float:
    """Moffat core width alpha (px) of a profile with this FWHM (px) and ``beta``."""
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_fwhm(alpha: float, beta: float) -> float:
    """FWHM (px) of a Moffat profile with core width ``alpha`` (px) and ``beta``."""
    return 2.0 * alpha * math.sqrt(2.0 ** (1.0 / beta) - 1.0)


def moffat_profile(r2, alpha: float, beta: float):
    """Surface brightness at squared radius ``r2`` (px^2) of a Moffat of unit total flux over the plane:
    (beta - 1) / (pi alpha^2) * (1 + r^2 / alpha^2)^-beta."""
    return (beta - 1.0) / (np.pi * alpha ** 2) * (1.0 + r2 / alpha ** 2) ** (-beta)


@dataclass(frozen=True, eq=False)
class PixelQuadrature:
    """Nodes and weights for integrating over a unit pixel: ``offsets`` (1-d, on [-0.5, 0.5]) along each axis
    and ``weights`` (2-d, summing to 1) over the node grid."""

    offsets: np.ndarray
    weights: np.ndarray
    equal: bool = False  # equal weights: the integral is the mean over the nodes

    def __post_init__(self):
        self.offsets.setflags(write=False)  # shared between callers (cached): never edited in place
        self.weights.setflags(write=False)

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def gauss_legendre(n: int) -> "PixelQuadrature":
        x, w = np.polynomial.legendre.leggauss(n)
        return PixelQuadrature(x / 2.0, np.outer(w / 2.0, w / 2.0))

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def midpoint(n: int) -> "PixelQuadrature":
        return PixelQuadrature((np.arange(n) + 0.5) / n - 0.5, np.full((n, n), 1.0 / (n * n)), equal=True)

    def integrate(self, values: np.ndarray) -> np.ndarray:
        """Integral over the pixel of ``values`` sampled on the node grid (the last two axes)."""
        if self.equal:
            return values.mean(axis=(-1, -2))
        return (values.reshape(values.shape[:-2] + (-1,)) * self.weights.ravel()).sum(-1)


def moffat_pixels(dx: np.ndarray, dy: np.ndarray, alpha: float, beta: float,
                  quadrature: PixelQuadrature | None = None) -> np.ndarray:
    """A unit-flux circular Moffat (core width ``alpha`` px) integrated over the pixels whose centres sit at
    offsets (dx, dy) from its centre (arrays broadcastable to a common shape). Default quadrature: 4 x 4 Gauss-Legendre.

    The sum over a stamp is the fraction of the total flux inside it (< 1), so fluxes fitted with it are totals.
    """
    q = quadrature or PixelQuadrature.gauss_legendre(4)
    u = np.asarray(dx, dtype=float)[..., None, None] + q.offsets[:, None]
    v = np.asarray(dy, dtype=float)[..., None, None] + q.offsets[None, :]
    return q.integrate(moffat_profile(u ** 2 + v ** 2, alpha, beta))


def render_moffat_stars(shape: tuple[int, int], x, y, flux, fwhm: float, beta: float, *, radius: int,
                        quadrature: PixelQuadrature, chunk: int = 48) -> np.ndarray:
    """An image of point sources: each a pixel-integrated Moffat of total ``flux`` at 0-based (x, y), drawn on a
    stamp of half-size ``radius`` px (what falls beyond it is lost, as a faint wing would be).

    Stamps are computed for ``chunk`` stars at a time (vectorised) and scattered into the image with
    ``bincount``, so the cost follows the number of stars, not image area x stars.
    """
    ny, nx = shape
    x, y, flux = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (x, y, flux))
    R = int(radius)
    keep = (x > -R) & (x < nx - 1 + R) & (y > -R) & (y < ny - 1 + R) & (flux > 0)
    x, y, flux = x[keep], y[keep], flux[keep]
    pad = 2 * R + 1
    canvas = np.zeros((ny + 2 * pad) * (nx + 2 * pad))
    alpha = moffat_alpha(fwhm, beta)
    sub, w2 = quadrature.offsets, quadrature.weights
    d = np.arange(-R, R + 1)
    for s in range(0, len(x), chunk):
        xs, ys, fs = x[s:s + chunk], y[s:s + chunk], flux[s:s + chunk]
        ix, iy = np.rint(xs).astype(int), np.rint(ys).astype(int)
        # offsets of the sub-pixel nodes from each star's centre: (n, S, q)
        u = (ix[:, None] + d[None, :] - xs[:, None])[:, :, None] + sub[None, None, :]
        v = (iy[:, None] + d[None, :] - ys[:, None])[:, :, None] + sub[None, None, :]
        prof = moffat_profile(v[:, :, None, :, None] ** 2 + u[:, None, :, None, :] ** 2, alpha, beta)  # (n,Sy,Sx,q,q)
        val = np.einsum("nyxab,ab->nyx", prof, w2) * fs[:, None, None]
        rows = (iy[:, None] + d[None, :] + pad)[:, :, None]
        cols = (ix[:, None] + d[None, :] + pad)[:, None, :]
        canvas += np.bincount((rows * (nx + 2 * pad) + cols).ravel(), weights=val.ravel(), minlength=canvas.size)
    return canvas.reshape(ny + 2 * pad, nx + 2 * pad)[pad:-pad, pad:-pad]


@dataclass(frozen=True)
class MoffatPSF:
    """A circular Moffat PSF: FWHM (px) and beta; ``source`` says where it came from (fit / header / default),
    ``n_stars`` how many stars measured it."""

    fwhm: float
    beta: float = 3.0
    source: str = "header"
    n_stars: int = 0

    @property
    def alpha(self) -> float:
        return self.fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / self.beta) - 1.0))

    def stamp(self, half: int, dx: float = 0.0, dy: float = 0.0,
              quadrature: PixelQuadrature | None = None) -> np.ndarray:
        """Pixel-integrated PSF on a (2 half + 1)^2 grid, source at (dx, dy) from the centre pixel; sums to the
        fraction of the total flux inside the stamp (< 1)."""
        yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(float)
        return moffat_pixels(xx - dx, yy - dy, self.alpha, self.beta, quadrature)
