"""The field-level joint calibration (``ubercal``): every frame's zero-point and every instrument x band's colour
term in one fit over all the stars of a field, with each star's true magnitudes as parameters tied to the
reference catalogue by its quoted errors.

Why: the cameras of a field see the same ten or twenty catalogue stars in every frame, so the catalogue's errors on
those stars (0.01-0.03 mag) never average down over frames. A colour term fitted per camera from its own stars
takes on whatever colour trend those few errors happen to have (0.01-0.03 in CT), and the zero-point, defined at
g-r = 0 and so extrapolated ~0.7 mag of colour from the stars, moves with it. Here the instruments' own photometry
ties the stars to each other (precisely: thousands of measurements), so the catalogue only has to set the few
numbers that instrumental photometry cannot (the magnitude scale and colour scale of each band), and it sets them
from every star any camera saw, each weighted by its catalogue error: an errors-in-variables fit in which the
colour of each star is also a parameter, not the catalogue's noisy value.

Model, per measurement o of star s on frame f (instrument x band k, reference column b):

    inst_o = M[s, b] + CT_k * (M[s, blue] - M[s, red]) - zp_f      inst = -2.5 log10(counts_e / exptime)

with priors M[s, c] ~ N(catalogue, catalogue error) and CT_k ~ N(ct_prior_mean, ct_prior_sigma): by default a
weak one that only keeps a camera whose stars span no colour from a singular fit; a camera's transformation
coefficient measured elsewhere (a standard field) where it is known, which frees the zero-points from this
field's catalogue colour errors. Gauss-Newton on the bilinear model (CT x colour),
then sigma clipping of measurements (cosmic rays, blends) and per-star excess scatter (a star that varies
through the frames, e.g. a transit host, gets that variance added to its measurements instead of pulling
the zero-points of the frames where it dipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["FieldFit", "fit_field"]


@dataclass
class FieldFit:
    """The joint solution. Frame, group and star arrays follow the indices the caller passed."""

    zp: np.ndarray  # per frame
    zp_err: np.ndarray
    colour_term: np.ndarray  # per group (instrument x band)
    colour_term_err: np.ndarray
    mags: np.ndarray = field(repr=False)  # (stars, columns): fitted true magnitudes
    used: np.ndarray = field(repr=False)  # bool per measurement
    residuals: np.ndarray = field(repr=False)  # per measurement (mag), inst - model
    star_scatter: np.ndarray = field(repr=False)  # per star: excess scatter added to its measurements (mag)
    n_used_frame: np.ndarray = field(repr=False)  # measurements used per frame
    chi2_red: float = 1.0
    iterations: int = 0


def fit_field(frame: np.ndarray, star: np.ndarray, inst_mag: np.ndarray, inst_err: np.ndarray, *,
              frame_group: np.ndarray, frame_column: np.ndarray, cat_mag: np.ndarray, cat_err: np.ndarray,
              blue: int, red: int, floor: float = 0.005, ct_prior_sigma: float | np.ndarray = 1.0,
              ct_prior_mean: float | np.ndarray = 0.0, clip_sigma: float = 4.0,
              min_clip_mag: float = 0.05, max_scale: float = 1.5, star_scatter: bool = True,
              max_clip_rounds: int = 10) -> FieldFit:
    """Joint fit of per-frame zero-points, per-group colour terms and per-star magnitudes (see the module).

    ``frame``/``star`` index each measurement into frames (0..F-1) and stars (0..S-1); ``frame_group`` (F) the
    frame's instrument x band group (0..K-1); ``frame_column`` (F) which catalogue column (0..C-1) the frame's
    band is calibrated against; ``cat_mag``/``cat_err`` (S, C) the catalogue (NaN: not known, no prior);
    ``blue``/``red`` the columns whose difference is the colour index. Every frame needs a measurement.
    ``ct_prior_mean``/``ct_prior_sigma`` (scalars or K arrays) put a N(mean, sigma) prior on each group's colour
    term: an instrument's known transformation coefficient, or the weak default that only keeps a camera whose
    stars span no colour from a singular fit.
    """
    frame, star = np.asarray(frame, int), np.asarray(star, int)
    y, e = np.asarray(inst_mag, float), np.asarray(inst_err, float)
    fg, fc = np.asarray(frame_group, int), np.asarray(frame_column, int)
    cat, cerr = np.asarray(cat_mag, float), np.asarray(cat_err, float)
    F, K = len(fg), int(fg.max()) + 1 if len(fg) else 0
    S, C = cat.shape
    if len(y) == 0 or not (len(frame) == len(star) == len(y) == len(e)):
        raise ValueError("fit_field: measurements need equal, non-empty frame, star, inst_mag and inst_err arrays")
    if frame.min() < 0 or frame.max() >= F or star.min() < 0 or star.max() >= S:
        raise ValueError(f"fit_field: frame index outside 0..{F - 1} or star index outside 0..{S - 1}")
    ok = np.isfinite(y) & np.isfinite(e) & (e >= 0)
    missing = np.setdiff1d(np.arange(F), frame[ok])
    if len(missing):
        raise ValueError(f"fit_field: frame(s) {missing.tolist()[:10]} have no (finite) measurement")
    use = ok.copy()
    extra = np.zeros(S)  # per-star excess variance (mag^2)
    ct_mean = np.broadcast_to(np.asarray(ct_prior_mean, float), (K,)).copy()
    ct_sigma = np.broadcast_to(np.asarray(ct_prior_sigma, float), (K,)).copy()
    if not (np.all(np.isfinite(ct_mean)) and np.all(np.isfinite(ct_sigma)) and np.all(ct_sigma > 0)):
        raise ValueError("fit_field: colour-term priors need finite means and positive, finite widths")
    params = _start(frame, star, y, fg, fc, cat, F, K, S, C, blue, red, use, ct_mean)
    it_total = 0
    for _ in range(max_clip_rounds):
        params, lu, it = _gauss_newton(params, frame, star, y, e, use, fg, fc, cat, cerr, F, K, S, C, blue, red,
                                        floor, ct_mean, ct_sigma, extra)
        it_total += it
        resid = y - _model(params, frame, star, fg, fc, F, K, S, C, blue, red)
        s2 = e ** 2 + floor ** 2 + extra[star]
        new_extra = _excess_scatter(resid, e ** 2 + floor ** 2, star, use, S) if star_scatter else extra
        norm = resid / np.sqrt(e ** 2 + floor ** 2 + new_extra[star])
        scale = float(np.clip(_mad(norm[use]), 1.0, max_scale)) if use.sum() > 2 else 1.0
        new = ok & ((np.abs(norm) < clip_sigma * scale) | (np.abs(resid) < min_clip_mag))
        # a frame keeps at least its best-fitting measurement, so it always has a zero-point
        for f in np.flatnonzero(np.bincount(frame[new], minlength=F) == 0):
            m = np.flatnonzero((frame == f) & ok)
            new[m[np.argmin(np.abs(norm[m]))]] = True
        if np.array_equal(new, use) and np.allclose(np.sqrt(new_extra), np.sqrt(extra), atol=1e-4):
            break
        use, extra = new, new_extra
    n_used = int(use.sum())
    chi2 = float(np.sum(resid[use] ** 2 / s2[use]))
    dof = n_used - F - K
    red_chi2 = chi2 / dof if dof > 0 else 1.0
    cov = _covariance(lu, F, K, len(params)) * max(red_chi2, 1.0)
    zp, ct = params[:F], params[F:F + K]
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))  # zero-points, then colour terms
    return FieldFit(zp=zp.copy(), zp_err=sd[:F].copy(), colour_term=ct.copy(), colour_term_err=sd[F:F + K].copy(),
                    mags=params[F + K:].reshape(S, C).copy(), used=use, residuals=resid,
                    star_scatter=np.sqrt(extra), n_used_frame=np.bincount(frame[use], minlength=F),
                    chi2_red=float(red_chi2), iterations=it_total)


def _model(p, frame, star, fg, fc, F, K, S, C, blue, red):
    zp, ct, mags = p[:F], p[F:F + K], p[F + K:].reshape(S, C)
    colour = mags[:, blue] - mags[:, red]
    return mags[star, fc[frame]] + ct[fg[frame]] * colour[star] - zp[frame]


def _start(frame, star, y, fg, fc, cat, F, K, S, C, blue, red, use, ct):
    """Catalogue magnitudes, CT at its prior mean, each frame's median offset; unknown catalogue values from the
    other column."""
    mags = cat.copy()
    col_mean = np.nanmedian(cat, axis=0)
    mags = np.where(np.isfinite(mags), mags, np.nanmedian(cat[:, [blue, red]], axis=1)[:, None]
                    + np.nan_to_num(col_mean - np.nanmedian(col_mean)))
    mags = np.where(np.isfinite(mags), mags, np.nanmedian(cat))
    zp = np.zeros(F)
    d = mags[star, fc[frame]] + ct[fg[frame]] * (mags[star, blue] - mags[star, red]) - y
    for f in range(F):
        m = (frame == f) & use & np.isfinite(d)
        zp[f] = np.median(d[m]) if m.any() else np.nanmedian(d)
    return np.concatenate([zp, ct, mags.ravel()])


def _gauss_newton(p, frame, star, y, e, use, fg, fc, cat, cerr, F, K, S, C, blue, red, floor, ct_mean, ct_sigma, extra,
                  maxiter=20, tol=1e-7):
    """Normal equations of measurements + catalogue priors + CT prior, iterated on the bilinear term.

    Sparse (each measurement touches a zero-point, a colour term and three star magnitudes), so a field of
    thousands of frames stays cheap. Returns the parameters, the factorised normal matrix and the iterations
    taken."""
    from scipy.sparse import coo_matrix, diags
    from scipy.sparse.linalg import splu

    P = F + K + S * C
    idx = np.flatnonzero(use)
    fr, st = frame[idx], star[idx]
    n = len(idx)
    w = 1.0 / (e[idx] ** 2 + floor ** 2 + extra[st])
    known = np.isfinite(cat) & np.isfinite(cerr) & (cerr > 0)
    prior = np.concatenate([np.zeros(F), 1.0 / ct_sigma ** 2,
                            np.where(known, 1.0 / np.where(known, cerr, 1.0) ** 2, 0.0).ravel()])
    centre = np.concatenate([np.zeros(F), ct_mean, np.where(known, cat, 0.0).ravel()])
    rows = np.repeat(np.arange(n), 5)
    base = F + K + st * C
    cols = np.column_stack([fr, F + fg[fr], base + fc[fr], base + blue, base + red]).ravel()
    lu = None
    for it in range(1, maxiter + 1):  # noqa: B007 (the count is returned)
        ct, mags = p[F:F + K], p[F + K:].reshape(S, C)
        colour = mags[:, blue] - mags[:, red]
        k = fg[fr]
        r = y[idx] - (mags[st, fc[fr]] + ct[k] * colour[st] - p[fr])
        vals = np.column_stack([-np.ones(n), colour[st], np.ones(n), ct[k], -ct[k]]).ravel()
        J = coo_matrix((vals, (rows, cols)), shape=(n, P)).tocsr()  # duplicates (band = blue or red) add up
        N = (J.T @ diags(w) @ J + diags(prior)).tocsc()
        b = J.T @ (w * r) + prior * (centre - p)
        try:
            lu = splu(N)
        except RuntimeError as exc:
            raise ValueError("fit_field: singular system (a star with no catalogue magnitude and no measurement "
                             "in one of the colour's bands?)") from exc
        step = lu.solve(b)
        if not np.all(np.isfinite(step)):
            raise ValueError("fit_field: singular system (a frame or colour term that nothing constrains)")
        p = p + step
        if np.max(np.abs(step)) < tol:
            break
    return p, lu, it


def _covariance(lu, F, K, P):
    """Covariance of the zero-points and colour terms: those columns of the inverse normal matrix."""
    eye = np.zeros((P, F + K))
    eye[np.arange(F + K), np.arange(F + K)] = 1.0
    return lu.solve(eye)[:F + K]


def _excess_scatter(resid, s2, star, use, S):
    """Per star, the variance its used residuals show beyond their errors (0 when they show none)."""
    out = np.zeros(S)
    for s in np.unique(star[use]):
        m = use & (star == s)
        n = int(m.sum())
        if n < 4:
            continue
        r = resid[m] - np.average(resid[m], weights=1.0 / s2[m])
        excess = float(np.mean(r ** 2 - s2[m]) * n / (n - 1))
        out[s] = max(excess, 0.0)
    return out


def _mad(x):
    x = np.asarray(x, float)
    return 1.4826 * float(np.median(np.abs(x - np.median(x)))) if len(x) else 1.0
