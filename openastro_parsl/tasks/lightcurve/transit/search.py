"""Transit search: a time-windowed biweight detrending and Box Least Squares, iterated with the transits masked
(see the package docstring for why), and the search figure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BlsResult", "biweight_trend", "bls_search", "detrend_and_search", "search_plot"]


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
    for j, (a, b) in enumerate(zip(lo, hi, strict=True)):
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
    for it in range(1, max_iterations + 1):  # noqa: B007 (the count is returned)
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
