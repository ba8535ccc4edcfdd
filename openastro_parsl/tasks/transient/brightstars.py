"""Candidates made by bright stars: diffraction spikes, halos and bleed residuals near the star, and internal
reflections (ghosts) at the star's position mirrored through the optical axis.

A residual of a bright star is not news, yet a difference image is full of them: the halo and spikes of a star
reach out in proportion to the square root of its flux (a PSF wing falling as r^-2 stays above a fixed surface
brightness out to a radius ~ sqrt(flux)), so the radius around a reference-catalogue star brighter than
``mag_limit`` is ``radius_at_limit * 10**(0.2 (mag_limit - mag))`` (capped). A ghost of a star lies on the line
through the optical axis, at ``axis + factor * (star - axis)`` in pixels (factor -1: a reflection through the
axis; each instrument has its own factors), so stars are mapped to pixels by the affine transformation that the
frame's own candidates (pixel and sky positions both known) define.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ...astro.match import angular_separation

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["BrightStarMatch", "bright_star_radius", "match_bright_stars", "sky_to_pixel"]


def bright_star_radius(mag, mag_limit: float, radius_at_limit: float, max_radius: float) -> np.ndarray:
    """Radius (arcsec) around a star of magnitude ``mag`` inside which a candidate is its residual (0 if fainter
    than ``mag_limit``)."""
    mag = np.asarray(mag, float)
    r = radius_at_limit * 10.0 ** (0.2 * (mag_limit - mag))
    return np.where(np.isfinite(mag) & (mag <= mag_limit), np.minimum(r, max_radius), 0.0)


def _tangent(ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection (arcsec) about (ra0, dec0)."""
    ra, dec = np.deg2rad(np.asarray(ra, float)), np.deg2rad(np.asarray(dec, float))
    a0, d0 = np.deg2rad(ra0), np.deg2rad(dec0)
    cosc = np.sin(d0) * np.sin(dec) + np.cos(d0) * np.cos(dec) * np.cos(ra - a0)
    xi = np.cos(dec) * np.sin(ra - a0) / cosc
    eta = (np.cos(d0) * np.sin(dec) - np.sin(d0) * np.cos(dec) * np.cos(ra - a0)) / cosc
    return np.rad2deg(xi) * 3600.0, np.rad2deg(eta) * 3600.0


def sky_to_pixel(cand_ra, cand_dec, cand_x, cand_y):
    """A function (ra, dec) -> (x, y) fitted to the candidates (affine in the tangent plane), and its rms (px);
    None when fewer than three non-collinear candidates define it."""
    ra, dec = np.asarray(cand_ra, float), np.asarray(cand_dec, float)
    x, y = np.asarray(cand_x, float), np.asarray(cand_y, float)
    ok = np.isfinite(ra) & np.isfinite(dec) & np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return None
    ra0, dec0 = float(np.median(ra[ok])), float(np.median(dec[ok]))
    xi, eta = _tangent(ra[ok], dec[ok], ra0, dec0)
    design = np.column_stack([np.ones(ok.sum()), xi, eta])
    if np.linalg.matrix_rank(design) < 3:
        return None
    coef, *_ = np.linalg.lstsq(design, np.column_stack([x[ok], y[ok]]), rcond=None)
    rms = float(np.sqrt(np.mean(np.sum((design @ coef - np.column_stack([x[ok], y[ok]])) ** 2, axis=1))))

    def to_pixel(r, d):
        a, b = _tangent(r, d, ra0, dec0)
        p = np.column_stack([np.ones(np.size(a)), np.ravel(a), np.ravel(b)]) @ coef
        return p[:, 0], p[:, 1]
    return to_pixel, rms


@dataclass
class BrightStarMatch:
    """Per candidate: the bright star it is a residual or a ghost of (index into the refcat, -1 if none)."""

    star: np.ndarray            # index of the star whose halo/spikes reach the candidate, -1 if none
    star_sep: np.ndarray        # separation to it (arcsec)
    star_radius: np.ndarray     # that star's radius (arcsec)
    ghost: np.ndarray           # index of the star whose ghost lies on the candidate, -1 if none
    ghost_sep_pix: np.ndarray   # distance to the ghost position (pixels)
    ghost_factor: np.ndarray    # which ghost (the factor)
    ghost_xy: np.ndarray        # the ghost's predicted (x, y)
    n_bright: int
    notes: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> np.ndarray:
        return (self.star >= 0) | (self.ghost >= 0)


def match_bright_stars(scored: Table, refcat: Table, band: str, mag_limit: float, radius_at_limit: float,
                       max_radius: float, ghost_axis_pix: tuple[float, float] | None = None,
                       ghost_factors: tuple[float, ...] = (), ghost_mag_limit: float | None = None,
                       ghost_radius_pix: float = 5.0) -> BrightStarMatch:
    """The candidates of ``scored`` within the radius of a refcat star brighter than ``mag_limit`` in ``band``,
    and (with ``ghost_axis_pix`` and ``ghost_factors``) those on a ghost of a star brighter than
    ``ghost_mag_limit``."""
    n = len(scored)
    out = BrightStarMatch(np.full(n, -1), np.full(n, np.inf), np.zeros(n), np.full(n, -1), np.full(n, np.inf),
                          np.full(n, np.nan), np.full((n, 2), np.nan), 0)
    mags = np.asarray(refcat[band], float)
    radius = bright_star_radius(mags, mag_limit, radius_at_limit, max_radius)
    bright = np.flatnonzero(radius > 0)
    out.n_bright = len(bright)
    if n and len(bright):
        sep = angular_separation(np.asarray(scored["ra"], float)[:, None], np.asarray(scored["dec"], float)[:, None],
                                 np.asarray(refcat["ra"], float)[bright][None, :],
                                 np.asarray(refcat["dec"], float)[bright][None, :]) * 3600.0
        inside = sep <= radius[bright][None, :]
        # the star that reaches furthest beyond the candidate decides (the brightest one nearby)
        reach = np.where(inside, radius[bright][None, :] - sep, -np.inf)
        k = np.argmax(reach, axis=1)
        hit = inside[np.arange(n), k]
        out.star = np.where(hit, bright[k], -1)
        out.star_sep = np.where(hit, sep[np.arange(n), k], np.inf)
        out.star_radius = np.where(hit, radius[bright][k], 0.0)
    if ghost_axis_pix is None or not ghost_factors or n == 0:
        return out
    glim = mag_limit if ghost_mag_limit is None else ghost_mag_limit
    gstars = np.flatnonzero(np.isfinite(mags) & (mags <= glim))
    if not len(gstars):
        return out
    mapping = sky_to_pixel(scored["ra"], scored["dec"], scored["x"], scored["y"])
    if mapping is None:
        out.notes.append("ghosts not checked: fewer than three candidates to map the stars onto the frame")
        return out
    to_pixel, rms = mapping
    if rms > ghost_radius_pix / 2:
        out.notes.append(f"ghosts not checked: the candidates map sky to pixels only to {rms:.2f} px rms")
        return out
    sx, sy = to_pixel(np.asarray(refcat["ra"], float)[gstars], np.asarray(refcat["dec"], float)[gstars])
    ax, ay = ghost_axis_pix
    cx, cy = np.asarray(scored["x"], float), np.asarray(scored["y"], float)
    for f in ghost_factors:
        gx, gy = ax + f * (sx - ax), ay + f * (sy - ay)
        d = np.hypot(cx[:, None] - gx[None, :], cy[:, None] - gy[None, :])
        j = np.argmin(d, axis=1)
        dj = d[np.arange(n), j]
        better = (dj <= ghost_radius_pix) & (dj < out.ghost_sep_pix)
        out.ghost = np.where(better, gstars[j], out.ghost)
        out.ghost_sep_pix = np.where(better, dj, out.ghost_sep_pix)
        out.ghost_factor = np.where(better, f, out.ghost_factor)
        out.ghost_xy = np.where(better[:, None], np.column_stack([gx[j], gy[j]]), out.ghost_xy)
    return out
