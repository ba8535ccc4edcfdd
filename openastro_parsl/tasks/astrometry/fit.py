"""Shared back half of plate solving: catalogue <-> detection matching, WCS fitting and verification.

Every engine (and the header-WCS check) ends here, so ``rms_pix`` and ``n_matched`` mean the same thing
whichever engine found the solution: residuals of detections against catalogue stars projected through the
final WCS, after mutual nearest-neighbour matching.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ...astro.wcs import quiet_wcs, wcs_from_cards  # noqa: F401 - re-exported: the cards a solution is stored as
from .sources import Sources

if TYPE_CHECKING:  # astropy.wcs loads in ~0.5 s: imported where a WCS is built, not by the planner
    from astropy.table import Table
    from astropy.wcs import WCS


@dataclass(frozen=True)
class Catalogue:
    """Reference stars: positions (deg) and a magnitude used only to order them by brightness."""

    ra: np.ndarray
    dec: np.ndarray
    mag: np.ndarray

    def __len__(self) -> int:
        return len(self.ra)

    @classmethod
    def from_table(cls, table: Table, mag_column: str = "r", *, what: str = "refcat") -> "Catalogue":
        missing = [c for c in ("ra", "dec") if c not in table.colnames]
        if missing:
            raise ValueError(f"{what}: reference catalogue lacks column(s) {missing} (has {table.colnames})")
        if mag_column not in table.colnames:
            raise ValueError(f"{what}: reference catalogue has no magnitude column {mag_column!r} "
                             f"(has {table.colnames}); set the task's mag_column")
        ra = np.asarray(table["ra"], dtype=float)
        dec = np.asarray(table["dec"], dtype=float)
        mag = np.asarray(np.ma.filled(np.ma.asarray(table[mag_column], dtype=float), np.nan), dtype=float)
        ok = np.isfinite(ra) & np.isfinite(dec)
        mag = np.where(np.isfinite(mag), mag, 99.0)
        order = np.argsort(mag[ok], kind="stable")
        return cls(ra[ok][order], dec[ok][order], mag[ok][order])

    def subset(self, index: np.ndarray) -> "Catalogue":
        return Catalogue(self.ra[index], self.dec[index], self.mag[index])


@dataclass(frozen=True)
class Verification:
    """How well a WCS maps the catalogue onto the detections."""

    n_matched: int
    rms_pix: float
    n_in_frame: int  # catalogue stars falling on the frame
    det_index: np.ndarray
    cat_index: np.ndarray


@dataclass
class SolveResult:
    """What an engine hands back: a verified WCS, or None with the reason it gave up."""

    wcs: WCS | None
    verification: Verification | None
    reason: str
    stats: dict = field(default_factory=dict)


def tangent_plane(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    """Gnomonic standard coordinates (xi east, eta north) in arcsec; NaN more than 60 deg away."""
    a, d = np.deg2rad(ra), np.deg2rad(dec)
    a0, d0 = np.deg2rad(ra0), np.deg2rad(dec0)
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    with np.errstate(all="ignore"):
        xi = np.cos(d) * np.sin(a - a0) / cosc
        eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cosc
    far = cosc < 0.5
    out = np.rad2deg(np.column_stack([xi, eta])) * 3600.0
    out[far] = np.nan
    return out


def sky_centre(ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    """Mean direction of a set of positions (safe across RA = 0)."""
    a, d = np.deg2rad(ra), np.deg2rad(dec)
    v = np.array([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)]).sum(axis=1)
    ra0 = float(np.rad2deg(np.arctan2(v[1], v[0])) % 360.0)
    dec0 = float(np.rad2deg(np.arctan2(v[2], np.hypot(v[0], v[1]))))
    return ra0, dec0


def project(wcs: WCS, cat: Catalogue) -> tuple[np.ndarray, np.ndarray]:
    """Catalogue positions in 0-based pixels of ``wcs`` (NaN where the projection is undefined)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        x, y = wcs.all_world2pix(cat.ra, cat.dec, 0, quiet=True)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def in_frame(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], margin: float = 0.0) -> np.ndarray:
    ny, nx = shape
    return np.isfinite(x) & np.isfinite(y) & (x >= -0.5 + margin) & (x <= nx - 0.5 - margin) \
        & (y >= -0.5 + margin) & (y <= ny - 0.5 - margin)


def mutual_match(det_xy: np.ndarray, cat_xy: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (det, cat) that are each other's nearest neighbour within ``radius`` pixels."""
    if len(det_xy) == 0 or len(cat_xy) == 0:
        return np.empty(0, int), np.empty(0, int)
    from scipy.spatial import cKDTree  # here: planning imports this module, and scipy costs it a quarter second

    d1, j = cKDTree(cat_xy).query(det_xy, distance_upper_bound=radius)
    d2, i = cKDTree(det_xy).query(cat_xy, distance_upper_bound=radius)
    det = np.flatnonzero(np.isfinite(d1))
    det = det[i[j[det]] == det]
    return det, j[det]


def verify(wcs: WCS, sources: Sources, cat: Catalogue, radius_pix: float) -> Verification:
    """Match catalogue stars on the frame to detections through ``wcs``; residual RMS of the matches."""
    x, y = project(wcs, cat)
    on = np.flatnonzero(in_frame(x, y, sources.shape))
    det, k = mutual_match(sources.xy, np.column_stack([x[on], y[on]]), radius_pix)
    cat_idx = on[k]
    if len(det):
        rms = float(np.sqrt(np.mean((sources.x[det] - x[cat_idx]) ** 2 + (sources.y[det] - y[cat_idx]) ** 2)))
    else:
        rms = float("nan")
    return Verification(int(len(det)), rms, int(len(on)), det, cat_idx)


def fit_wcs(x: np.ndarray, y: np.ndarray, ra: np.ndarray, dec: np.ndarray, sip_degree: int | None = None,
            weights: np.ndarray | None = None, shape: tuple[int, int] | None = None) -> WCS:
    """TAN WCS by weighted least squares, or TAN-SIP by astropy's fit_wcs_from_points (pixels 0-based).

    A TAN WCS is exactly linear between pixels and gnomonic coordinates about its own reference point, so
    with that point fixed the fit is a 6-parameter weighted linear solve; it is repeated once with the
    reference point moved to the frame centre. Weights matter: astropy's fitter has none, and a few faint
    stars with 0.5 px centroid errors would otherwise pull a 12-star solution well off.
    """
    from astropy.wcs import WCS

    x, y, ra, dec = (np.asarray(a, dtype=float) for a in (x, y, ra, dec))
    if sip_degree:
        from astropy.coordinates import SkyCoord
        from astropy.wcs.utils import fit_wcs_from_points

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_wcs_from_points((x, y), SkyCoord(ra, dec, unit="deg"), projection="TAN", sip_degree=sip_degree)
    if len(x) < 3:
        raise ValueError(f"a TAN fit needs at least 3 stars, got {len(x)}")
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=float)
    sw = np.sqrt(w)[:, None]
    ra0, dec0 = sky_centre(ra, dec)
    if shape is not None:
        cx, cy = (shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0
    else:
        cx, cy = float(np.mean(x)), float(np.mean(y))
    wcs = None
    for _ in range(2):
        std = tangent_plane(ra, dec, ra0, dec0) / 3600.0  # degrees
        design = np.column_stack([x - cx, y - cy, np.ones(len(x))])
        coef, *_ = np.linalg.lstsq(design * sw, std * sw, rcond=None)
        cd = coef[:2].T                                   # [[dxi/dx, dxi/dy], [deta/dx, deta/dy]]
        if not np.all(np.isfinite(cd)) or abs(np.linalg.det(cd)) == 0:
            raise ValueError("degenerate star positions for a TAN fit")
        offset = np.linalg.solve(cd, -coef[2])            # pixel (relative to centre) of the tangent point
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.cunit = ["deg", "deg"]
        wcs.wcs.radesys = "ICRS"
        wcs.wcs.crval = [ra0, dec0]
        wcs.wcs.crpix = [cx + offset[0] + 1.0, cy + offset[1] + 1.0]
        wcs.wcs.cd = cd
        wcs.wcs.set()
        ra0, dec0 = (float(v) for v in wcs.wcs_pix2world([[cx, cy]], 0)[0])
    return wcs


def _sip_allowed(n: int, sip_degree: int | None) -> int | None:
    """SIP of degree d adds (d+1)(d+2)/2 - 3 terms per axis: only fit it with a comfortable surplus of stars."""
    if not sip_degree:
        return None
    terms = (sip_degree + 1) * (sip_degree + 2) // 2 - 3
    return sip_degree if n >= 3 * (3 + terms) else None


def mean_offset(wcs: WCS, sources: Sources, cat: Catalogue, v: Verification) -> float:
    """Length (pixels) of the inverse-variance weighted mean detection-minus-catalogue offset of the matches:
    a shifted WCS shows here long before its residual RMS, which centroid noise dominates."""
    if v.n_matched == 0:
        return float("inf")
    x, y = project(wcs, cat.subset(v.cat_index))
    dx, dy = sources.x[v.det_index] - x, sources.y[v.det_index] - y
    w = sources.weights(v.det_index)
    w = np.ones(len(dx)) if w is None else w
    return float(np.hypot(np.sum(w * dx) / np.sum(w), np.sum(w * dy) / np.sum(w)))


def _inliers(wcs: WCS, sources: Sources, cat: Catalogue, v: Verification, clip: float = 3.5) -> np.ndarray:
    """Matches whose residual is within ``clip`` robust sigmas (in units of each centroid's own error).

    A blend, a noise peak next to a faint catalogue star or a centroid pulled by a neighbour sits many
    sigmas off; left in, one such pair moves a dozen-star solution by a tenth of a pixel.
    """
    if v.n_matched < 8:
        return np.arange(v.n_matched)
    sub = cat.subset(v.cat_index)
    x, y = project(wcs, sub)
    r = np.hypot(sources.x[v.det_index] - x, sources.y[v.det_index] - y)
    err = sources.err[v.det_index] if sources.err is not None else np.full(len(r), max(float(np.median(r)), 1e-3))
    chi = r / err
    scale = max(1.0, float(np.median(chi)) / 1.1774)  # the median of a 2-d Gaussian radius is 1.1774 sigma
    keep = np.flatnonzero(chi <= clip * scale)
    return keep if len(keep) >= 6 else np.arange(v.n_matched)


def _refit(wcs: WCS, sources: Sources, cat: Catalogue, v: Verification, sip_degree: int | None) -> WCS:
    k = _inliers(wcs, sources, cat, v)
    det, ci = v.det_index[k], v.cat_index[k]
    return fit_wcs(sources.x[det], sources.y[det], cat.ra[ci], cat.dec[ci], _sip_allowed(len(k), sip_degree),
                   sources.weights(det), sources.shape)


def refine(wcs: WCS, sources: Sources, cat: Catalogue, *, radius_pix: float, sip_degree: int | None = None,
           start_radius_pix: float | None = None, iterations: int = 4) -> tuple[WCS, Verification]:
    """Iterate match -> clip -> weighted refit with a shrinking radius, then verify at ``radius_pix``.

    Starting wide lets a rough solution (from four stars, or another program) pull in the rest of the frame;
    the final radius is the verification radius. Returns the input WCS unchanged if too few stars match.
    """
    radii = np.geomspace(max(start_radius_pix or 2.5 * radius_pix, radius_pix), radius_pix, iterations)
    best = wcs
    for r in radii:
        v = verify(best, sources, cat, float(r))
        if v.n_matched < 4:
            break
        best = _refit(best, sources, cat, v, sip_degree)
    # Last refits on the final-radius matches, so the reported residuals are those of this very fit.
    v = verify(best, sources, cat, radius_pix)
    for _ in range(2):
        if v.n_matched < 4:
            break
        cand = _refit(best, sources, cat, v, sip_degree)
        vc = verify(cand, sources, cat, radius_pix)
        if vc.n_matched < v.n_matched:
            break
        best, v = cand, vc
    return best, v


def chance_probability(n_matched: int, n_in_frame: int, n_sources: int, shape: tuple[int, int],
                       radius_pix: float) -> float:
    """Chance that ``n_matched`` or more of ``n_in_frame`` catalogue stars land on one of ``n_sources``
    detections at random (binomial, each star hitting with the detections' share of the frame's area).

    A wrong WCS (say at the wrong scale, with hundreds of catalogue stars on the frame) still lands a few
    stars on detections; what sets a real solution apart is that many more do than that share predicts.
    """
    from scipy.special import bdtrc  # binomial upper tail (scipy.stats costs seconds to import)

    if n_matched <= 0:
        return 1.0
    ny, nx = shape
    p = min(1.0, n_sources * np.pi * radius_pix ** 2 / float(nx * ny))
    if p >= 1.0:
        return 1.0
    return float(bdtrc(n_matched - 1, max(n_in_frame, n_matched), p))


def false_alarm_probability(v: Verification, n_sources: int, shape: tuple[int, int], radius_pix: float) -> float:
    """``chance_probability`` of a verification's matches."""
    return chance_probability(v.n_matched, v.n_in_frame, n_sources, shape, radius_pix)


def accept(v: Verification, n_sources: int, shape: tuple[int, int], radius_pix: float, min_matches: int,
           max_rms_pix: float, max_false_alarm: float) -> bool:
    """The verdict on a solution: enough catalogue stars on detections, tightly enough, and not by chance."""
    if v.n_matched < min_matches or not np.isfinite(v.rms_pix) or v.rms_pix > max_rms_pix:
        return False
    return false_alarm_probability(v, n_sources, shape, radius_pix) <= max_false_alarm


def wcs_difference_rms(wcs_a: WCS, wcs_b: WCS, cat: Catalogue, shape: tuple[int, int]) -> tuple[float, int]:
    """RMS (pixels) between where two WCSs put the catalogue stars that fall on the frame, and how many.

    The accuracy measure against a known true WCS: independent of detection noise, it is the error a
    downstream task inherits when it places a catalogue star on this frame.
    """
    xa, ya = project(wcs_a, cat)
    xb, yb = project(wcs_b, cat)
    on = in_frame(xb, yb, shape) & np.isfinite(xa) & np.isfinite(ya)
    if not on.any():
        return float("nan"), 0
    return float(np.sqrt(np.mean((xa[on] - xb[on]) ** 2 + (ya[on] - yb[on]) ** 2))), int(on.sum())
