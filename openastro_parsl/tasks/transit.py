"""Transit search (detrend + Box Least Squares) and transit timing (batman fits, linear ephemeris, O-C).

Detrending: a time-windowed biweight location (astropy's ``biweight_location``, Tukey's robust M-estimator,
as in wotan's default) divided out of the flux. A transit pulls even a robust location down when it fills much
of the window (ground-based nights are often mostly transit), so the search iterates: detrend, BLS, mask the
found transits (``mask_factor`` x duration), detrend again without them, BLS again, until the period holds.

Search: astropy ``BoxLeastSquares`` over ``autoperiod`` with a duration grid, then a fine grid around the
peak. A sparse light curve cannot tell P from P/2, P/3... when the phantom transits fall in gaps, so the
longest multiple of the best period that keeps the power (``harmonic_tolerance``) is preferred.

Timing (stage 7b): one global batman (Mandel & Agol, quadratic limb darkening) fit of t0, P, Rp/Rs, a/Rs and
the impact parameter to every transit window of the relative flux, each window with its own polynomial
baseline (the night's zero point and airmass trend, fitted rather than detrended away); then each window is
fitted with that shape, only its mid-time and baseline free. Mid-time errors come from the curvature of chi-square
(the Jacobian at the optimum) or, when wider, the profile-likelihood interval (chi-square within reduced
chi-square of its minimum over a grid of mid-times, the baseline re-fitted at each: ingress or egress covered
by a few points makes chi-square flatter than its curvature says), scaled by the square root of the window's
reduced chi-square when it exceeds 1 (red noise, a bad night); injection tests check their coverage. A weighted
linear fit gives the ephemeris and the O-C table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from pydantic import Field

from ..pipeline.connections import Connections, Input, Output
from ..pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig

DEFAULT_LIMB_DARKENING = {"u": (0.45, 0.25), "g": (0.62, 0.16), "r": (0.43, 0.23), "i": (0.34, 0.26),
                          "TESS": (0.33, 0.24), "Kepler": (0.45, 0.24)}


# --------------------------------------------------------------------------------------------- detrending
def biweight_trend(t, y, window: float, mask=None, min_points: int = 3, max_evaluations: int = 3000) -> np.ndarray:
    """Robust running location of y in a centred time window, ignoring masked (True) points.

    Evaluated at every point, or at ~``max_evaluations`` points and interpolated for long light curves.
    Where a window holds fewer than ``min_points`` usable points the trend is interpolated from neighbours.
    """
    from astropy.stats import biweight_location

    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    use = np.isfinite(y) & (~np.asarray(mask, bool) if mask is not None else True)
    tu, yu = t[use], y[use]
    step = max(1, int(np.ceil(len(t) / max_evaluations)))
    idx = np.arange(0, len(t), step)
    if idx[-1] != len(t) - 1:
        idx = np.append(idx, len(t) - 1)
    lo = np.searchsorted(tu, t[idx] - window / 2, side="left")
    hi = np.searchsorted(tu, t[idx] + window / 2, side="right")
    values = np.full(len(idx), np.nan)
    for j, (a, b) in enumerate(zip(lo, hi)):
        if b - a >= min_points:
            values[j] = biweight_location(yu[a:b], c=5.0)
        elif b - a > 0:
            values[j] = np.median(yu[a:b])
    ok = np.isfinite(values)
    if not ok.any():
        return np.full(len(t), np.nanmedian(y))
    return np.interp(t, t[idx][ok], values[ok])


# --------------------------------------------------------------------------------------------- BLS search
@dataclass
class BlsResult:
    period: float
    t0: float
    duration: float
    depth: float
    depth_err: float
    snr: float
    power: float
    n_transits: int
    harmonic: int
    periods: np.ndarray
    powers: np.ndarray
    flat: np.ndarray
    trend: np.ndarray
    iterations: int

    @property
    def detected_params(self) -> dict:
        return {"period": self.period, "t0": self.t0, "duration": self.duration, "depth": self.depth,
                "depth_err": self.depth_err, "snr": self.snr, "power": self.power, "n_transits": self.n_transits}


def _bls_stats(bls, period, duration, t0):
    stats = bls.compute_stats(period, duration, t0)
    depth, depth_err = (float(v) for v in stats["depth"])
    have = np.asarray(stats["per_transit_count"]) > 0
    return depth, depth_err, int(have.sum())


def bls_search(t, y, dy, *, durations, min_period: float, max_period: float | None, frequency_factor: float = 1.0,
               harmonic_tolerance: float = 0.9, max_harmonic: int = 5, objective: str = "likelihood"):
    """BLS on (already flat) data; returns (period, t0, duration, power, periods, powers, harmonic, bls)."""
    from astropy.timeseries import BoxLeastSquares

    t, y, dy = (np.asarray(a, dtype=float) for a in (t, y, dy))
    baseline = float(np.ptp(t))
    max_period = min(max_period or baseline / 2, baseline)
    durations = np.asarray([d for d in durations if d < min_period / 2], dtype=float)
    if len(durations) == 0:
        raise ValueError(f"every duration is too long for min_period {min_period}")
    bls = BoxLeastSquares(t, y, dy)
    periods = bls.autoperiod(durations, minimum_period=min_period, maximum_period=max_period,
                             frequency_factor=frequency_factor)
    res = bls.power(periods, durations, objective=objective)
    power = np.nan_to_num(np.asarray(res.power, dtype=float), nan=-np.inf)
    i = int(np.argmax(power))
    period, duration, t0, best = float(res.period[i]), float(res.duration[i]), float(res.transit_time[i]), power[i]
    # P vs P/k: phantom transits in the gaps cost nothing, so take the longest multiple that keeps the power
    harmonic = 1
    for k in range(2, max_harmonic + 1):
        if period * k > max_period:
            break
        pk = bls.power(np.array([period * k]), durations, objective=objective)
        if float(np.max(pk.power)) >= harmonic_tolerance * best:
            harmonic = k
    if harmonic > 1:
        period *= harmonic
    # fine grid: a tenth of the local grid step, durations around the best
    local = np.abs(np.diff(periods)).min() if len(periods) > 1 else period * 1e-3
    step = max(local * harmonic, 1e-6 * period)
    fine_p = np.linspace(period - 3 * step, period + 3 * step, 121)
    fine_d = np.unique(np.clip(duration * np.linspace(0.7, 1.3, 13), durations.min() * 0.5, min_period / 2))
    fr = bls.power(fine_p, fine_d, objective=objective, oversample=20)
    j = int(np.nanargmax(fr.power))
    period, duration, t0, best = float(fr.period[j]), float(fr.duration[j]), float(fr.transit_time[j]), float(fr.power[j])
    return period, t0, duration, best, np.asarray(res.period), np.asarray(res.power), harmonic, bls


def detrend_and_search(t, flux, flux_err, *, window: float, durations, min_period: float, max_period=None,
                       mask_factor: float = 1.5, max_iterations: int = 3, frequency_factor: float = 1.0,
                       harmonic_tolerance: float = 0.9, objective: str = "likelihood") -> BlsResult:
    """Iterative transit-masked biweight detrending + BLS (see the module docstring)."""
    from astropy.timeseries import BoxLeastSquares

    t, flux, flux_err = (np.asarray(a, dtype=float) for a in (t, flux, flux_err))
    order = np.argsort(t)
    if not np.all(order == np.arange(len(t))):
        raise ValueError("times must be sorted")
    mask = np.zeros(len(t), dtype=bool)
    previous = None
    for it in range(1, max_iterations + 1):
        trend = biweight_trend(t, flux, window, mask=mask)
        flat = flux / trend
        period, t0, duration, power, periods, powers, harmonic, bls = bls_search(
            t, flat, flux_err / trend, durations=durations, min_period=min_period, max_period=max_period,
            frequency_factor=frequency_factor, harmonic_tolerance=harmonic_tolerance, objective=objective)
        new_mask = BoxLeastSquares(t, flat).transit_mask(t, period, mask_factor * duration, t0)
        if previous is not None and abs(period - previous) < 1e-4 * period and np.array_equal(new_mask, mask):
            break
        previous, mask = period, new_mask
    depth, depth_err, n_tr = _bls_stats(bls, period, duration, t0)
    snr = depth / depth_err if depth_err > 0 else 0.0
    # t0: the transit nearest the middle of the data (least correlated with the period)
    mid = 0.5 * (t.min() + t.max())
    t0 = t0 + np.round((mid - t0) / period) * period
    return BlsResult(period, float(t0), duration, depth, depth_err, float(snr), power, n_tr, harmonic, periods,
                     powers, flat, trend, it)


# --------------------------------------------------------------------------------------------- batman model
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
        for w, Vw in zip(windows, V):
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
    return GlobalFit(*(float(v) for v in x), chi2_red, int(len(ff)), dict(zip(names, (float(e) for e in err))))


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


def linear_ephemeris(epoch, t, err):
    """Weighted least squares t = t0 + P * epoch: (t0, P, cov, chi2_red)."""
    epoch, t, err = (np.asarray(a, dtype=float) for a in (epoch, t, err))
    A = np.vstack([np.ones_like(epoch), epoch]).T / err[:, None]
    b = t / err
    sol, *_ = np.linalg.lstsq(A, b, rcond=None)
    cov = np.linalg.inv(A.T @ A)
    r = b - A @ sol
    dof = max(len(t) - 2, 1)
    return float(sol[0]), float(sol[1]), cov, float(r @ r / dof)


def oc_table(epoch, t_obs, t_obs_err) -> Table:
    """The ``transitTimes`` table: epoch, t_obs, t_obs_err, t_pred, oc, oc_err (days) + ephemeris meta."""
    epoch = np.asarray(epoch, dtype=np.int64)
    t_obs = np.asarray(t_obs, dtype=float)
    t_obs_err = np.asarray(t_obs_err, dtype=float)
    if len(epoch) < 2:
        raise ValueError("a linear ephemeris needs at least two transit times")
    t0, period, cov, chi2_red = linear_ephemeris(epoch, t_obs, t_obs_err)
    t_pred = t0 + period * epoch
    table = Table({"epoch": epoch, "t_obs": t_obs, "t_obs_err": t_obs_err, "t_pred": t_pred,
                   "oc": t_obs - t_pred, "oc_err": t_obs_err})
    table.meta.update({"period": period, "period_err": float(np.sqrt(cov[1, 1])), "t0": t0,
                       "t0_err": float(np.sqrt(cov[0, 0])), "ephemeris_cov": cov.tolist(), "chi2_red": chi2_red,
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


# --------------------------------------------------------------------------------------------- plots
def search_plot(t, flat, res: BlsResult, title=""):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 8), layout="constrained")
    ax0, ax1, ax2 = fig.subplots(3, 1)
    ax0.plot(res.periods, res.powers, lw=0.5, color="k")
    ax0.axvline(res.period, color="tab:red", ls="--", lw=0.8)
    ax0.set_xscale("log")
    ax0.set_xlabel("period [d]")
    ax0.set_ylabel("BLS power")
    ax0.set_title(f"{title}  P = {res.period:.6f} d, depth = {res.depth * 1e3:.2f} ppt, SNR = {res.snr:.1f}")
    ax1.plot(t - t.min(), flat, ".", ms=2, color="k")
    n = np.arange(np.floor((t.min() - res.t0) / res.period), np.ceil((t.max() - res.t0) / res.period) + 1)
    for tc in res.t0 + n * res.period:
        ax1.axvline(tc - t.min(), color="tab:red", alpha=0.3, lw=0.8)
    ax1.set_xlabel(f"time - {t.min():.4f} [BJD_TDB]")
    ax1.set_ylabel("detrended flux")
    phase = (t - res.t0 + 0.5 * res.period) % res.period - 0.5 * res.period
    near = np.abs(phase) < 3 * res.duration
    ax2.plot(phase[near] * 24, flat[near], ".", ms=3, color="k", alpha=0.6)
    ph = np.linspace(-3 * res.duration, 3 * res.duration, 600)
    ax2.plot(ph * 24, np.where(np.abs(ph) < res.duration / 2, 1 - res.depth, 1.0), color="tab:red")
    ax2.set_xlabel("hours from mid-transit")
    ax2.set_ylabel("flux (folded)")
    return fig


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


# --------------------------------------------------------------------------------------------- tasks
class TransitSearchConfig(TaskConfig):
    target_kinds: list[str] | None = Field(["transit_host"], description="Only targets of these kinds are searched (others end no_work); null searches every target.")
    detrend_window_days: float = Field(0.75, gt=0, description="Width of the biweight window (about 3x the longest transit sought).")
    durations_days: list[float] = Field([0.04, 0.06, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25], description="Trial transit durations for BLS.")
    min_period: float = Field(0.5, gt=0, description="Shortest period searched (days).")
    max_period: float | None = Field(None, gt=0, description="Longest period searched (days); default half the baseline.")
    frequency_factor: float = Field(1.0, gt=0, description="BLS autoperiod frequency_factor (smaller: finer grid).")
    objective: str = Field("likelihood", description="BLS objective: likelihood or snr.")
    mask_factor: float = Field(1.5, gt=0, description="Transits masked over this many durations when re-detrending.")
    max_iterations: int = Field(3, ge=1, description="Detrend+search rounds at most.")
    harmonic_tolerance: float = Field(0.9, gt=0, le=1, description="Prefer k x P when its BLS power is at least this fraction of P's.")
    min_snr: float = Field(7.0, gt=0, description="Depth / depth_err needed to call a detection.")
    min_transits: int = Field(2, ge=1, description="Transits with data needed to call a detection.")
    refine: bool = Field(True, description="Refine period, t0 and duration with a batman fit to the detrended transits (BLS values kept as bls_*).")
    use_outliers: bool = Field(False, description="Keep points flagged `outlier` by the lightcurve task.")


class TransitSearchConnections(Connections):
    lightcurves = Input("lightcurve", ("target", "band"), "Table", multiple=True)
    search = Output("transitSearch", ("target",), "StructuredData", doc="Best BLS period, t0, duration, depth, SNR.")
    plot = Output("transitSearchPlot", ("target",), "Plot", doc="BLS spectrum, detrended and folded light curve.")


def stack_flux(lightcurves, use_outliers=False):
    """All bands' relative fluxes in time order: (t, flux, flux_err, bands)."""
    ts, fs, es, bs = [], [], [], []
    for lc in lightcurves:
        m = np.ones(len(lc), bool) if (use_outliers or "outlier" not in lc.colnames) else ~np.asarray(lc["outlier"], bool)
        m &= np.isfinite(np.asarray(lc["flux"], float)) & np.isfinite(np.asarray(lc["flux_err"], float))
        ts.append(np.asarray(lc["time"], float)[m])
        fs.append(np.asarray(lc["flux"], float)[m])
        es.append(np.asarray(lc["flux_err"], float)[m])
        bs.append(np.full(int(m.sum()), str(lc.meta.get("band", "x"))))
    if not ts:
        return None
    t, f, e, b = (np.concatenate(a) for a in (ts, fs, es, bs))
    o = np.argsort(t, kind="stable")
    return t[o], f[o], e[o], b[o]


def _exposure_days(lightcurves):
    vals = [lc.meta.get("exposure_days") for lc in lightcurves if lc.meta.get("exposure_days")]
    return float(max(vals)) if vals else None


class TransitSearchTask(PipelineTask):
    """Detrend and run BLS on a target's light curves (all bands together)."""

    dimensions = ("target",)
    Config = TransitSearchConfig
    Connections = TransitSearchConnections
    resources = Resources(cores=1, memory_mb=2048, walltime_min=30)

    def run(self, lightcurves, records=None, data_id=None):
        cfg = self.config
        target = dict((records or {}).get("target") or {})
        name = (data_id or {}).get("target") or target.get("name") or lightcurves[0].meta.get("target", "target")
        kind = target.get("kind")
        if cfg.target_kinds is not None and kind is not None and kind not in cfg.target_kinds:
            raise NoWorkFound(f"target {name} is a {kind}; transit search runs on {cfg.target_kinds}")
        stacked = stack_flux(lightcurves, cfg.use_outliers)
        if stacked is None or len(stacked[0]) < 20:
            raise NoWorkFound(f"target {name}: {0 if stacked is None else len(stacked[0])} points, too few for BLS")
        t, f, e, bands = stacked
        res = detrend_and_search(t, f, e, window=cfg.detrend_window_days, durations=cfg.durations_days,
                                 min_period=cfg.min_period, max_period=cfg.max_period, mask_factor=cfg.mask_factor,
                                 max_iterations=cfg.max_iterations, frequency_factor=cfg.frequency_factor,
                                 harmonic_tolerance=cfg.harmonic_tolerance, objective=cfg.objective)
        detected = bool(res.snr >= cfg.min_snr and res.depth > 0 and res.n_transits >= cfg.min_transits)
        self.log.info("target %s: P = %.6f d, t0 = %.5f, depth %.5f +- %.5f (SNR %.1f), %d transits, detected=%s",
                      name, res.period, res.t0, res.depth, res.depth_err, res.snr, res.n_transits, detected)
        out = dict(res.detected_params)
        out.update({f"bls_{k}": out[k] for k in ("period", "t0", "duration")})
        out["refined"] = False
        if cfg.refine and detected:
            try:
                fit = fit_global(t, f, e, bands, period=res.period, t0=res.t0,
                                 duration=res.duration, depth=res.depth, exposure_days=_exposure_days(lightcurves),
                                 u_by_band=lambda b: DEFAULT_LIMB_DARKENING.get(b, (0.45, 0.25)))
            except ValueError as exc:
                self.log.warning("target %s: model refinement skipped: %s", name, exc)
            else:
                if abs(fit.period - res.period) < 0.005 * res.period and 0 < fit.duration < 0.5 * fit.period:
                    out.update({"period": fit.period, "period_err": fit.errors["period"], "t0": fit.t0,
                                "t0_err": fit.errors["t0"], "duration": fit.duration, "rp_rs": fit.rp,
                                "a_rs": fit.a, "impact": fit.b, "refined": True})
        out.update({"detected": detected, "target": name, "harmonic": res.harmonic, "iterations": res.iterations,
                    "n_points": int(len(t)), "bands": sorted(set(bands.tolist())), "time_system": "BJD_TDB",
                    "min_snr": cfg.min_snr})
        return {"search": out, "plot": search_plot(t, res.flat, res, title=str(name))}


class TransitTimingConfig(TaskConfig):
    limb_darkening: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(DEFAULT_LIMB_DARKENING),
                                                           description="Quadratic limb darkening (u1, u2) per band.")
    default_limb_darkening: tuple[float, float] = Field((0.45, 0.25), description="For bands not in limb_darkening.")
    global_window: float = Field(1.5, gt=0, description="Global fit uses points within this many durations of mid-transit.")
    window_factor: float = Field(1.0, gt=0, description="Each transit is fitted within this many durations of its predicted mid-time.")
    baseline_order: int = Field(1, ge=0, le=3, description="Polynomial order of each transit's baseline.")
    min_in_transit: int = Field(3, ge=1, description="Points inside the transit needed to time it.")
    min_out_of_transit: int = Field(2, ge=0, description="Points outside the transit (in its window) needed to time it.")
    use_outliers: bool = Field(False, description="Keep points flagged `outlier` by the lightcurve task.")


class TransitTimingConnections(Connections):
    lightcurves = Input("lightcurve", ("target", "band"), "Table", multiple=True)
    search = Input("transitSearch", ("target",), "StructuredData")
    times = Output("transitTimes", ("target",), "Table", doc="Mid-times, linear ephemeris, O-C.")
    plot = Output("ocPlot", ("target",), "Plot", doc="O-C diagram.")


class TransitTimingTask(PipelineTask):
    """Per-transit mid-times with batman, linear ephemeris and O-C."""

    dimensions = ("target",)
    Config = TransitTimingConfig
    Connections = TransitTimingConnections
    resources = Resources(cores=1, memory_mb=2048, walltime_min=30)

    def run(self, lightcurves, search, data_id=None):
        cfg = self.config
        name = (data_id or {}).get("target") or search.get("target", "target")
        if not search.get("detected"):
            raise NoWorkFound(f"target {name}: the transit search found no transit (SNR {search.get('snr', 0):.1f})")
        stacked = stack_flux(lightcurves, cfg.use_outliers)
        if stacked is None:
            raise NoWorkFound(f"target {name}: no light-curve points")
        t, f, e, bands = stacked

        def u_by_band(b):
            return tuple(cfg.limb_darkening.get(b, cfg.default_limb_darkening))

        exposure = _exposure_days(lightcurves)
        period, t0, duration = float(search["period"]), float(search["t0"]), float(search["duration"])
        shape = fit_global(t, f, e, bands, period=period, t0=t0, duration=duration, depth=float(search["depth"]),
                           u_by_band=u_by_band, window_factor=cfg.global_window, baseline_order=cfg.baseline_order,
                           exposure_days=exposure)
        self.log.info("target %s: global fit P = %.6f, t0 = %.5f, Rp/Rs = %.4f, a/Rs = %.2f, b = %.2f, chi2_red %.2f",
                      name, shape.period, shape.t0, shape.rp, shape.a, shape.b, shape.chi2_red)
        times = measure_transit_times(t, f, e, bands, shape=shape, u_by_band=u_by_band,
                                      baseline_order=cfg.baseline_order, window_factor=cfg.window_factor,
                                      exposure_days=exposure, min_in=cfg.min_in_transit, min_out=cfg.min_out_of_transit)
        if len(times) < 2:
            raise NoWorkFound(f"target {name}: {len(times)} transit(s) with enough coverage to time, need 2")
        first = min(tt.epoch for tt in times)
        table = oc_table([tt.epoch - first for tt in times], [tt.t_obs for tt in times],
                         [tt.t_obs_err for tt in times])
        table["n_points"] = np.array([tt.n_points for tt in times], dtype=np.int64)
        table["chi2_red"] = np.array([tt.chi2_red for tt in times])
        table.meta.update({"target": name, "rp_rs": shape.rp, "a_rs": shape.a, "impact": shape.b,
                           "duration": shape.duration, "global_chi2_red": shape.chi2_red,
                           "limb_darkening": {b: list(u_by_band(b)) for b in sorted(set(bands.tolist()))},
                           "error_method": "chi-square curvature (Jacobian) of each window's fit, scaled by sqrt(chi2_red) of that window when > 1"})
        self.log.info("target %s: %d transits timed, P = %.7f +- %.7f d, O-C rms %.2f min", name, len(table),
                      table.meta["period"], table.meta["period_err"], float(np.std(table["oc"]) * 1440))
        return {"times": table, "plot": oc_plot(table, title=str(name))}
