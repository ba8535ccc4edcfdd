"""Zero-points: the per-frame weighted, sigma-clipped fit of zero-point and colour term, and the per-instrument
pooled colour term and extinction coefficient."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ZeropointFit", "fit_extinction", "fit_zeropoint", "pooled_colour_term"]


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
