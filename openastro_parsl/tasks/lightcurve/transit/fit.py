"""Transit timing: a global batman fit of the transit shape, per-transit mid-times with that shape, the linear
ephemeris and O-C table, and the O-C figure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ....astro.ephemeris import fit_linear_ephemeris

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["DEFAULT_LIMB_DARKENING", "GlobalFit", "TransitShape", "TransitTime", "fit_global", "fit_transit_time",
           "measure_transit_times", "oc_plot", "oc_table", "profile_half_width", "t14"]

DEFAULT_LIMB_DARKENING = {"u": (0.45, 0.25), "g": (0.62, 0.16), "r": (0.43, 0.23), "i": (0.34, 0.26),
                          "TESS": (0.33, 0.24), "Kepler": (0.45, 0.24)}


def _batman_params(t0, period, rp, a, inc, u):
    import batman

    p = batman.TransitParams()
    p.t0, p.per, p.rp, p.a, p.inc, p.ecc, p.w = t0, period, rp, a, inc, 0.0, 90.0
    p.limb_dark, p.u = "quadratic", list(u)
    return p


class TransitShape:
    """batman light curves for fixed times (one model per band), re-evaluated for new parameters."""

    def __init__(self, t, bands, u_by_band, exposure_days: float | None = None):
        import batman

        self.t = np.asarray(t, dtype=float)
        self.bands = np.asarray(bands, dtype=str)
        self.models = []
        ss = int(np.ceil(exposure_days / (2 / 1440))) if exposure_days and exposure_days > 10 / 1440 else 1
        for b in np.unique(self.bands):
            sel = np.flatnonzero(self.bands == b)
            p = _batman_params(float(self.t[sel].mean()), 1.0, 0.1, 10.0, 90.0, u_by_band(b))
            kw = {"supersample_factor": ss, "exp_time": exposure_days} if ss > 1 else {}
            self.models.append((sel, p, batman.TransitModel(p, self.t[sel], **kw)))

    def __call__(self, t0, period, rp, a, b_impact):
        inc = float(np.degrees(np.arccos(np.clip(b_impact / a, 0.0, 1.0))))
        out = np.empty(len(self.t))
        for sel, p, m in self.models:
            p.t0, p.per, p.rp, p.a, p.inc = t0, period, rp, a, inc
            out[sel] = m.light_curve(p)
        return out


def t14(period, rp, a, b_impact) -> float:
    """Total transit duration (circular orbit), days."""
    arg = np.sqrt(max((1 + rp) ** 2 - b_impact**2, 0.0)) / (a * np.sqrt(1 - (b_impact / a) ** 2))
    return float(period / np.pi * np.arcsin(min(arg, 1.0)))


@dataclass
class GlobalFit:
    t0: float
    period: float
    rp: float
    a: float
    b: float
    chi2_red: float
    n_points: int
    errors: dict

    @property
    def duration(self) -> float:
        return t14(self.period, self.rp, self.a, self.b)


def fit_global(t, flux, flux_err, bands, *, period, t0, duration, depth, u_by_band, window_factor=1.5,
               baseline_order=1, exposure_days=None) -> GlobalFit:
    """Least-squares batman fit of (t0, P, Rp/Rs, a/Rs, b) to every transit window of the raw relative flux.

    Each window (points within ``window_factor`` durations of a predicted mid-time) has its own polynomial
    baseline, solved linearly inside every residual evaluation (variable projection), so the night's zero
    point and trend are fitted with the shape rather than removed beforehand.
    """
    from scipy.optimize import least_squares

    t, flux, flux_err = (np.asarray(a, dtype=float) for a in (t, flux, flux_err))
    epoch = np.round((t - t0) / period)
    near = np.abs(t - (t0 + epoch * period)) < window_factor * duration
    if near.sum() < 8:
        raise ValueError(f"only {int(near.sum())} points within {window_factor} durations of the transits")
    tt, ff, ee, bb, ep = t[near], flux[near], flux_err[near], np.asarray(bands)[near], epoch[near]
    windows = [np.flatnonzero(ep == n) for n in np.unique(ep)]
    windows = [w for w in windows if len(w) > baseline_order + 1]
    keep = np.concatenate(windows)
    tt, ff, ee, bb, ep = tt[keep], ff[keep], ee[keep], bb[keep], ep[keep]
    windows = [np.flatnonzero(ep == n) for n in np.unique(ep)]
    V = [np.vander((tt[w] - tt[w].mean()) / duration, baseline_order + 1, increasing=True) for w in windows]
    shape = TransitShape(tt, bb, u_by_band, exposure_days)

    # t0 and P as offsets from their start values: finite-difference steps relative to 2.46e6 would be minutes
    def resid(x):
        if x[4] > 1 + x[2]:  # no transit at all: a flat, heavily penalised residual
            return np.full(len(ff), 1e3)
        s = shape(t0 + x[0], period + x[1], x[2], x[3], x[4])
        r = np.empty(len(ff))
        for w, Vw in zip(windows, V, strict=True):
            A = Vw * (s[w] / ee[w])[:, None]
            c, *_ = np.linalg.lstsq(A, ff[w] / ee[w], rcond=None)
            r[w] = ff[w] / ee[w] - A @ c
        return r

    rp0 = float(np.sqrt(max(depth, 1e-5)) * 1.05)
    a0 = float(np.clip(period / (np.pi * duration) * (1 + rp0), 2.0, 100.0))
    lo = [-0.3 * duration, -0.01 * period, 0.005, 1.5, 0.0]
    hi = [0.3 * duration, 0.01 * period, 0.5, 200.0, 1.0]
    best = None
    for b0 in (0.1, 0.5, 0.8):  # the impact parameter is the one with several minima
        a_b = float(np.clip(a0 * np.sqrt(max((1 + rp0) ** 2 - b0**2, 1e-3)) / (1 + rp0), 1.6, 199.0))
        x0 = np.array([0.0, 0.0, rp0, a_b, b0])
        r = least_squares(resid, x0, bounds=(lo, hi), x_scale=[duration / 10, period * 1e-4, 0.01, 1.0, 0.1])
        if best is None or r.cost < best.cost:
            best = r
    x = best.x.copy()
    x[0] += t0
    x[1] += period
    n_par = 5 + sum(Vw.shape[1] for Vw in V)
    dof = max(len(ff) - n_par, 1)
    chi2_red = float(2 * best.cost / dof)
    try:
        cov = np.linalg.inv(best.jac.T @ best.jac) * max(chi2_red, 1.0)
        err = np.sqrt(np.diag(cov))
    except np.linalg.LinAlgError:
        err = np.full(5, np.nan)
    names = ("t0", "period", "rp", "a", "b")
    return GlobalFit(*(float(v) for v in x), chi2_red, int(len(ff)), dict(zip(names, (float(e) for e in err), strict=True)))


# --------------------------------------------------------------------------------------------- timing
@dataclass
class TransitTime:
    epoch: int
    t_pred: float
    t_obs: float
    t_obs_err: float
    n_points: int
    n_in: int
    chi2_red: float


def fit_transit_time(t, flux, flux_err, bands, *, shape: GlobalFit, t_pred: float, u_by_band, baseline_order=1,
                     window_factor=1.0, error_scale=1.0, exposure_days=None, min_in=3, min_out=2,
                     search_half_width=None):
    """Mid-time of one transit: shape fixed, tc + polynomial baseline free; None if coverage is too thin."""
    from scipy.optimize import least_squares

    dur = shape.duration
    sel = np.abs(t - t_pred) < window_factor * dur  # window_factor x T14 on either side
    n_in = int(np.sum(np.abs(t[sel] - t_pred) < dur / 2))
    n_out = int(sel.sum()) - n_in
    if n_in < min_in or n_out < min_out or sel.sum() < baseline_order + 1 + 3:
        return None
    tt, ff, ee, bb = t[sel], flux[sel], flux_err[sel] * error_scale, np.asarray(bands)[sel]
    model = TransitShape(tt, bb, u_by_band, exposure_days)
    dt = tt - t_pred
    V = np.vander(dt / dur, baseline_order + 1, increasing=True)

    def linear_baseline(tc):
        s = model(tc, shape.period, shape.rp, shape.a, shape.b)
        A = (V * s[:, None]) / ee[:, None]
        c, *_ = np.linalg.lstsq(A, ff / ee, rcond=None)
        r = ff / ee - A @ c
        return float(r @ r), c

    half = search_half_width if search_half_width is not None else 0.5 * dur
    grid = t_pred + np.linspace(-half, half, 161)
    chi = np.array([linear_baseline(tc)[0] for tc in grid])
    k = int(np.argmin(chi))
    c0 = linear_baseline(grid[k])[1]

    def resid(x):  # x[0]: mid-time minus t_pred (an offset, so finite differences are fine-grained)
        s = model(t_pred + x[0], shape.period, shape.rp, shape.a, shape.b)
        return (ff - s * (V @ x[1:])) / ee

    x0 = np.concatenate([[grid[k] - t_pred], c0])
    r = least_squares(resid, x0, method="lm", x_scale=np.concatenate([[dur / 100], np.full(len(c0), 1e-3)]))
    dof = max(len(ff) - len(x0), 1)
    chi2_red = float(2 * r.cost / dof)
    try:
        cov = np.linalg.inv(r.jac.T @ r.jac) * max(chi2_red, 1.0)
        err = float(np.sqrt(cov[0, 0]))
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(err) or abs(r.x[0]) > half + dur / 2:
        return None
    # the curvature describes a parabola; with ingress or egress sampled by a few points chi-square is flatter
    # away from its minimum, so the profile-likelihood interval (delta chi2 = chi2_red) is taken when wider
    err = max(err, profile_half_width(grid - t_pred, chi, 2 * r.cost, max(chi2_red, 1.0)))
    return TransitTime(0, t_pred, float(t_pred + r.x[0]), err, int(sel.sum()), n_in, chi2_red)


def profile_half_width(x: np.ndarray, chi2: np.ndarray, chi2_min: float, delta: float) -> float:
    """Half the width of {x : chi2(x) <= chi2_min + delta} on a grid (linear interpolation at the crossings;
    the grid's edge where it never crosses)."""
    level = np.nanmin(np.append(chi2, chi2_min)) + delta
    inside = np.flatnonzero(chi2 <= level)
    if len(inside) == 0:  # no finite chi-square on the grid
        return 0.0
    i0, i1 = int(inside[0]), int(inside[-1])

    def crossing(a, b):  # between grid points a (outside) and b (inside)
        return x[b] + (x[a] - x[b]) * (level - chi2[b]) / (chi2[a] - chi2[b])

    lo = crossing(i0 - 1, i0) if i0 > 0 else x[0]
    hi = crossing(i1 + 1, i1) if i1 < len(x) - 1 else x[-1]
    width = float(hi - lo) / 2
    return width if np.isfinite(width) else 0.0


def oc_table(epoch, t_obs, t_obs_err) -> Table:
    """The ``transitTimes`` table: epoch, t_obs, t_obs_err, t_pred, oc, oc_err (days) + ephemeris meta."""
    from astropy.table import Table

    epoch = np.asarray(epoch, dtype=np.int64)
    t_obs = np.asarray(t_obs, dtype=float)
    t_obs_err = np.asarray(t_obs_err, dtype=float)
    if len(epoch) < 2:
        raise ValueError("a linear ephemeris needs at least two transit times")
    eph = fit_linear_ephemeris(epoch, t_obs, t_obs_err)
    t_pred = eph.t0 + eph.period * epoch
    table = Table({"epoch": epoch, "t_obs": t_obs, "t_obs_err": t_obs_err, "t_pred": t_pred,
                   "oc": t_obs - t_pred, "oc_err": t_obs_err})
    table.meta.update({"period": eph.period, "period_err": eph.period_err, "t0": eph.t0,
                       "t0_err": eph.t0_err, "ephemeris_cov": eph.cov.tolist(), "chi2_red": eph.chi2_red,
                       "time_system": "BJD_TDB", "time_format": "jd", "oc_unit": "d"})
    return table


def measure_transit_times(t, flux, flux_err, bands, *, shape: GlobalFit, u_by_band, baseline_order=1,
                          window_factor=1.0, exposure_days=None, min_in=3, min_out=2,
                          error_scale=1.0) -> list[TransitTime]:
    """Fit every transit of the linear ephemeris of ``shape`` that the data cover."""
    scale = error_scale
    n_lo = int(np.floor((t.min() - shape.t0) / shape.period)) - 1
    n_hi = int(np.ceil((t.max() - shape.t0) / shape.period)) + 1
    out = []
    for n in range(n_lo, n_hi + 1):
        t_pred = shape.t0 + n * shape.period
        if not np.any(np.abs(t - t_pred) < shape.duration / 2):
            continue
        tt = fit_transit_time(t, flux, flux_err, bands, shape=shape, t_pred=t_pred, u_by_band=u_by_band,
                              baseline_order=baseline_order, window_factor=window_factor, error_scale=scale,
                              exposure_days=exposure_days, min_in=min_in, min_out=min_out)
        if tt is not None:
            tt.epoch = n
            out.append(tt)
    return out


def oc_plot(table: Table, title=""):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    ax.errorbar(table["epoch"], np.asarray(table["oc"]) * 1440, np.asarray(table["oc_err"]) * 1440, fmt="o", ms=4)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("O - C [min]")
    ax.set_title(f"{title}  P = {table.meta['period']:.6f} d, t0 = {table.meta['t0']:.5f}")
    return fig
