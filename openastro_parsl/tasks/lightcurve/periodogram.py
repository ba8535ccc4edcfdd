"""Period search on a target's light curves: Lomb-Scargle, refined with a multi-harmonic model.

Stage 7a of the pipeline map. Search: astropy's Lomb-Scargle (``fastnifty`` from nifty-ls when it is
installed, astropy's ``fast`` otherwise) on one band, ``LombScargleMultiband`` (shared sinusoid, per-band
offsets) when several bands have data, over an automatic frequency grid (1/baseline/``samples_per_peak``
spacing up to ``1/min_period``). The false-alarm probability of the highest peak is Baluev's analytic bound
by default, a bootstrap on request.

Refinement: a sparse ground-based light curve has aliases of almost equal power and a non-sinusoidal
variable (an RR Lyrae) biases a one-term peak, so the strongest few peaks are re-fitted on a fine grid with a
linear model — harmonics shared by all bands, a per-band fundamental (amplitudes differ with colour) and one
offset per instrument x band (each calibration has its own zero-point systematics) — with the number of
harmonics chosen by BIC and points beyond ``clip_sigma`` of the model dropped. The best chi-square wins.
Light curves already tied across instruments by ensemble photometry (``meta["ensemble"]``) get one offset per
band instead: a free offset for an instrument's handful of visits would throw away their phase information.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import Field

from ...pipeline.connections import Connections, Input, Output
from ...pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig


def fast_method() -> str:
    """``fastnifty`` when nifty-ls is importable (importing it registers the method with astropy), else ``fast``."""
    try:
        import nifty_ls  # noqa: F401
    except ImportError:
        return "fast"
    return "fastnifty"


def frequency_grid(t, *, min_period: float, max_period: float | None, samples_per_peak: float) -> np.ndarray:
    """Evenly spaced frequencies (1/day) from 1/max_period (default: the baseline) to 1/min_period."""
    baseline = float(np.ptp(t))
    if baseline <= 0:
        raise ValueError("light curve spans no time")
    df = 1.0 / (samples_per_peak * baseline)
    fmin = 1.0 / max_period if max_period else 1.0 / baseline
    fmax = 1.0 / min_period
    if fmax <= fmin:
        raise ValueError(f"min_period {min_period} d is not below the longest period searched {1 / fmin:.3f} d")
    return np.arange(max(fmin, df), fmax, df)


@dataclass
class HarmonicModel:
    """y = offset[group] + scale[band] * sum_k (a_k sin 2pi k f t + b_k cos 2pi k f t).

    One light-curve shape shared by all bands, its amplitude scaled per band (a pulsating star's amplitude
    depends on colour), and one offset per group (instrument x band: each calibration's own zero point).
    """

    frequency: float
    nterms: int
    groups: list[str]
    offsets: np.ndarray
    bands: list[str]
    scales: np.ndarray
    coef: np.ndarray
    chi2: float
    n_params: int

    def shape(self, t) -> np.ndarray:
        return _harmonics(np.asarray(t, float), self.frequency, self.nterms) @ self.coef

    def __call__(self, t, groups, bands) -> np.ndarray:
        o = dict(zip(self.groups, self.offsets))
        sc = dict(zip(self.bands, self.scales))
        # a group with every point clipped has no offset: NaN (its points stay clipped)
        return (np.array([o.get(g, np.nan) for g in groups])
                + np.array([sc.get(b, np.nan) for b in bands]) * self.shape(t))


def _harmonics(t, f, nterms):
    w = 2 * np.pi * f * t
    return np.vstack([fn(k * w) for k in range(1, nterms + 1) for fn in (np.sin, np.cos)]).T


def harmonic_fit(t, y, dy, f, groups, bands, nterms, n_iter=4) -> HarmonicModel:
    """Weighted least squares of the HarmonicModel at frequency f (alternating: offsets + shape with the band
    scales fixed, then offsets + scales with the shape fixed; the reference band, the one with most points,
    keeps scale 1)."""
    ug, gi = np.unique(groups, return_inverse=True)
    ub, bi = np.unique(bands, return_inverse=True)
    ref = int(np.argmax(np.bincount(bi)))
    G = np.zeros((len(t), len(ug)))
    G[np.arange(len(t)), gi] = 1.0
    H = _harmonics(t, f, nterms)
    w = 1.0 / dy
    scales = np.ones(len(ub))
    for it in range(n_iter if len(ub) > 1 else 1):
        X = np.hstack([G, H * scales[bi][:, None]]) * w[:, None]
        sol, *_ = np.linalg.lstsq(X, y * w, rcond=None)
        offsets, coef = sol[:len(ug)], sol[len(ug):]
        if len(ub) == 1:
            break
        h = H @ coef
        others = [b for b in range(len(ub)) if b != ref]
        S = np.vstack([np.where(bi == b, h, 0.0) for b in others]).T
        rest = y - h * (bi == ref)
        sol2, *_ = np.linalg.lstsq(np.hstack([G, S]) * w[:, None], rest * w, rcond=None)
        offsets = sol2[:len(ug)]
        scales[others] = sol2[len(ug):]
    model = G @ offsets + scales[bi] * (H @ coef)
    r = (y - model) * w
    return HarmonicModel(float(f), nterms, list(ug), offsets, list(ub), scales.copy(), coef, float(r @ r),
                         len(ug) + 2 * nterms + len(ub) - 1)


@dataclass
class PeriodResult:
    period: float
    period_err: float
    frequency: float
    power: float  # one-term (multiband) Lomb-Scargle power at the chosen frequency
    fap: float
    fap_method: str
    method: str
    nterms: int
    model: HarmonicModel
    n_points: int
    n_clipped: int
    bands: list[str]
    chi2_red: float
    grid: np.ndarray = field(repr=False)
    spectrum: np.ndarray = field(repr=False)
    candidates: list[dict] = field(default_factory=list)
    keep: np.ndarray | None = field(default=None, repr=False)

    def summary(self, max_spectrum: int = 2000) -> dict:
        step = max(1, int(np.ceil(len(self.grid) / max_spectrum)))
        n = len(self.grid) // step * step
        freq = self.grid[:n].reshape(-1, step)
        pw = self.spectrum[:n].reshape(-1, step)
        j = pw.argmax(axis=1)  # keep each block's peak so no peak is lost
        return {
            "period": self.period, "period_err": self.period_err, "frequency": self.frequency, "power": self.power,
            "fap": self.fap, "fap_method": self.fap_method, "method": self.method, "nterms": self.nterms,
            "band_scales": dict(zip(self.model.bands, self.model.scales.tolist())),
            "group_offsets": dict(zip(self.model.groups, self.model.offsets.tolist())),
            "n_points": self.n_points, "n_clipped": self.n_clipped, "bands": self.bands, "chi2_red": self.chi2_red,
            "n_frequencies": int(len(self.grid)), "min_frequency": float(self.grid[0]),
            "max_frequency": float(self.grid[-1]), "candidates": self.candidates,
            "spectrum": {"frequency": freq[np.arange(len(j)), j].tolist(), "power": pw[np.arange(len(j)), j].tolist()},
        }


def _refine(t, y, dy, groups, bands, f0, df, nterms, n_fine=41):
    """Chi-square minimum within one grid step of f0: a coarse then a zoomed fine grid."""
    def scan(ff):
        return np.array([harmonic_fit(t, y, dy, x, groups, bands, nterms).chi2 for x in ff])

    ff = np.linspace(f0 - df, f0 + df, n_fine)
    k = int(np.argmin(scan(ff)))
    step = ff[1] - ff[0]
    ff = np.linspace(ff[k] - 2 * step, ff[k] + 2 * step, n_fine)
    chi = scan(ff)
    return ff, chi, int(np.argmin(chi))


def lomb_scargle_search(t, y, dy, bands=None, groups=None, *, min_period=0.1, max_period=None,
                        samples_per_peak=10.0, n_candidates=5, max_nterms=3, clip_sigma=5.0,
                        fap_method="baluev", n_bootstrap=300, seed=0, method="auto") -> PeriodResult:
    """Search, then refine the best peaks; see the module docstring. ``y`` in magnitudes (or any flux unit).

    Clipping: a point is dropped when its residual from the refined model exceeds ``clip_sigma`` times its
    error scaled by its band's robust residual scatter (at least 1).
    """
    from astropy.stats import mad_std
    from astropy.timeseries import LombScargle, LombScargleMultiband
    from scipy.signal import find_peaks

    t, y, dy = (np.asarray(a, dtype=float) for a in (t, y, dy))
    n = len(t)
    bands = np.asarray(bands if bands is not None else np.full(n, "x"), dtype=str)
    groups = np.asarray(groups if groups is not None else bands, dtype=str)
    ok = np.isfinite(t) & np.isfinite(y) & np.isfinite(dy) & (dy > 0)
    t, y, dy, bands, groups = t[ok], y[ok], dy[ok], bands[ok], groups[ok]
    if len(t) < 3 * (1 + 2 * 1) + len(np.unique(groups)):
        raise ValueError(f"{len(t)} points are too few for a period search")
    grid = frequency_grid(t, min_period=min_period, max_period=max_period, samples_per_peak=samples_per_peak)
    df = grid[1] - grid[0]
    ubands = sorted(set(bands))
    multiband = len(ubands) > 1
    # centre each band on its weighted mean so the one-term search and the FAP see variability only
    yc = y.copy()
    for b in ubands:
        m = bands == b
        yc[m] -= np.average(y[m], weights=dy[m] ** -2)
    if multiband:
        ls = LombScargleMultiband(t, yc, bands, dy, nterms_base=1, nterms_band=0)
        used = "multiband-flexible"
        power = ls.power(grid, method="flexible")
    else:
        ls = LombScargle(t, yc, dy)
        used = fast_method() if method == "auto" else method
        power = ls.power(grid, method=used, assume_regular_frequency=True)
    power = np.nan_to_num(np.asarray(power, dtype=float))
    peaks, _ = find_peaks(np.concatenate([[-np.inf], power, [-np.inf]]))
    peaks = peaks - 1
    peaks = peaks[np.argsort(power[peaks])[::-1][:n_candidates]]

    keep = np.ones(len(t), dtype=bool)
    best = None
    for it in range(4):  # refine, clip points far from the best model, refine again
        tk, yk, dk, gk, bk = t[keep], y[keep], dy[keep], groups[keep], bands[keep]

        def refined(j, nt):
            ff, chi, k = _refine(tk, yk, dk, gk, bk, grid[j], df, nt)
            npar = harmonic_fit(tk, yk, dk, ff[k], gk, bk, nt).n_params
            return {"f": ff[k], "chi2": chi[k], "bic": chi[k] + npar * np.log(len(tk)), "nterms": nt,
                    "ff": ff, "chi": chi, "k": k, "npar": npar}

        # harmonics by BIC at the strongest peak, then the candidates compared with that model
        nt = min((refined(peaks[0], n) for n in range(1, max_nterms + 1)), key=lambda r: r["bic"])["nterms"]
        results = [refined(j, nt) for j in peaks]
        best = min(results, key=lambda r: r["chi2"])
        model = harmonic_fit(tk, yk, dk, best["f"], gk, bk, nt)
        resid = (y - model(t, groups, bands)) / dy
        new_keep = np.ones(len(t), dtype=bool)
        for b in ubands:  # each band against its own scatter, never below the quoted errors (small groups overfit)
            m = bands == b
            scale = max(float(mad_std(resid[m & keep], ignore_nan=True)), 1.0)
            new_keep[m] = np.abs(resid[m]) <= clip_sigma * scale  # NaN -> False
        if np.array_equal(new_keep, keep) or it == 3 or new_keep.sum() < len(t) // 2:
            break
        keep = new_keep

    f_best = float(best["f"])
    npts = int(keep.sum())
    chi2_red = float(best["chi2"] / max(npts - best["npar"], 1))
    ff, chi, k = best["ff"], best["chi"], best["k"]
    period_err = _period_error(ff, chi, k, chi2_red, f_best)
    power_best = float(np.asarray(ls.power(np.array([f_best])) if multiband
                                  else ls.power(np.array([f_best]), method="slow")).ravel()[0])
    fmax = float(grid[-1])
    if fap_method == "baluev":
        from astropy.timeseries.periodograms.lombscargle._statistics import fap_baluev

        fap = float(fap_baluev(power_best, fmax, t, yc, dy, normalization="standard"))
    elif fap_method == "bootstrap":
        fap = _bootstrap_fap(power_best, t, yc, dy, bands, grid, multiband, n_bootstrap, seed, used)
    else:
        raise ValueError(f"fap_method must be 'baluev' or 'bootstrap', not {fap_method!r}")
    cands = sorted({round(1 / r["f"], 8): r for r in results}.values(), key=lambda r: r["chi2"])
    return PeriodResult(
        period=1 / f_best, period_err=period_err, frequency=f_best, power=power_best, fap=fap,
        fap_method=fap_method, method=used, nterms=nt, model=model, n_points=npts, n_clipped=int((~keep).sum()),
        bands=ubands, chi2_red=chi2_red, grid=grid, spectrum=power, keep=keep,
        candidates=[{"period": float(1 / r["f"]), "chi2": float(r["chi2"])} for r in cands])


def _period_error(ff, chi, k, chi2_red, f_best) -> float:
    """1-sigma from the chi-square curvature at the minimum (errors scaled by the reduced chi-square)."""
    lo, hi = max(k - 3, 0), min(k + 4, len(ff))
    if hi - lo < 3:
        return float("nan")
    a = np.polyfit(ff[lo:hi] - ff[k], chi[lo:hi], 2)[0]
    if a <= 0:
        return float("nan")
    sigma_f = np.sqrt(max(chi2_red, 1.0) / a)  # delta chi2 = 1 <=> a * sf^2 = 1
    return float(sigma_f / f_best**2)


def _bootstrap_fap(power, t, y, dy, bands, grid, multiband, n_bootstrap, seed, method) -> float:
    """Share of resampled light curves (values drawn with replacement within each band, times kept) whose
    highest peak reaches ``power``; resolution 1/n_bootstrap."""
    from astropy.timeseries import LombScargle, LombScargleMultiband

    rng = np.random.default_rng(seed)
    idx_by_band = [np.flatnonzero(bands == b) for b in np.unique(bands)]
    maxima = np.empty(n_bootstrap)
    for i in range(n_bootstrap):
        pick = np.empty(len(t), dtype=int)
        for idx in idx_by_band:
            pick[idx] = rng.choice(idx, size=len(idx), replace=True)
        if multiband:
            p = LombScargleMultiband(t, y[pick], bands, dy[pick], nterms_base=1, nterms_band=0).power(grid)
        else:
            p = LombScargle(t, y[pick], dy[pick]).power(grid, method=method, assume_regular_frequency=True)
        maxima[i] = np.nanmax(p)
    return float((np.sum(maxima >= power) + 1) / (n_bootstrap + 1))


def folded_plot(t, y, dy, bands, groups, result: PeriodResult, title: str = ""):
    """Two panels: power spectrum; light curve folded on the period, group offsets removed, model drawn."""
    from matplotlib.figure import Figure

    m = result.model
    offsets = dict(zip(m.groups, m.offsets))
    keep = result.keep if result.keep is not None else np.ones(len(t), bool)
    fig = Figure(figsize=(8, 6.5), layout="constrained")
    ax0, ax1 = fig.subplots(2, 1, height_ratios=[1, 2])
    ax0.plot(result.grid, result.spectrum, lw=0.6, color="k")
    ax0.axvline(result.frequency, color="tab:red", lw=0.8, ls="--")
    ax0.set_xlabel("frequency [1/d]")
    ax0.set_ylabel("LS power")
    ax0.set_title(f"{title}  P = {result.period:.6f} d, FAP = {result.fap:.2g} ({result.fap_method})")
    t0 = float(np.min(t))
    phase = ((t - t0) * result.frequency) % 1.0
    colours = {"g": "tab:green", "r": "tab:red", "i": "tab:purple"}
    grid = np.linspace(0, 2, 400)
    shape = m.shape(t0 + grid / result.frequency)
    for b, scale in zip(m.bands, m.scales):
        sel = bands == b
        ref = float(np.mean([offsets[g] for g in set(groups[sel]) if g in offsets]))
        yy = y + ref - np.array([offsets.get(g, np.nan) for g in groups])
        c = colours.get(b)
        for extra in (0.0, 1.0):
            ax1.errorbar(phase[sel & keep] + extra, yy[sel & keep], dy[sel & keep], fmt=".", ms=3, lw=0.5, color=c,
                         label=b if extra == 0 else None)
            ax1.plot(phase[sel & ~keep] + extra, yy[sel & ~keep], "x", color="0.4",
                     label="clipped" if extra == 0 and b == m.bands[0] and (~keep).any() else None)
        ax1.plot(grid, ref + scale * shape, color=c, lw=1)
    if np.nanmedian(y) > 3:  # magnitudes: brighter up
        ax1.invert_yaxis()
    ax1.set_xlabel(f"phase (P = {result.period:.6f} d)")
    ax1.set_ylabel("mag, offsets per instrument removed")
    ax1.legend(loc="best", fontsize=8)
    return fig


class PeriodSearchConfig(TaskConfig):
    min_period: float = Field(0.1, gt=0, description="Shortest period searched (days): sets the highest frequency.")
    max_period: float | None = Field(None, gt=0, description="Longest period searched (days); default: the baseline.")
    samples_per_peak: float = Field(10.0, gt=0, description="Grid points per peak width 1/baseline.")
    method: str = Field("auto", description="Single-band Lomb-Scargle method: auto (fastnifty if nifty-ls is installed, else fast), fast, slow, cython, ...")
    multiband: bool = Field(True, description="Search all bands together (LombScargleMultiband) when more than one has data.")
    min_points_per_band: int = Field(5, ge=1, description="A band with fewer points is left out.")
    n_candidates: int = Field(5, ge=1, description="Peaks re-fitted with the multi-harmonic model.")
    max_nterms: int = Field(3, ge=1, le=6, description="Most harmonics the refinement may use (chosen by BIC).")
    clip_sigma: float = Field(5.0, gt=0, description="Points farther than this (MAD sigmas) from the refined model are dropped.")
    fap_method: str = Field("baluev", description="baluev (analytic, Baluev 2008) or bootstrap.")
    n_bootstrap: int = Field(300, ge=10, description="Resamplings for the bootstrap FAP.")
    seed: int = Field(0, description="Random seed of the bootstrap.")
    use_outliers: bool = Field(False, description="Keep points flagged `outlier` by the lightcurve task.")
    offsets: str = Field("auto", pattern="^(auto|instrument|band)$",
                         description="Zero-point offsets the model fits: one per instrument x band, one per band, or auto "
                                     "(per band when every light curve is ensemble-corrected, else per instrument).")


class PeriodSearchConnections(Connections):
    lightcurves = Input("lightcurve", ("target", "band"), "Table", multiple=True, doc="The target's light curves, one per band.")
    periodogram = Output("periodogram", ("target",), "StructuredData", doc="Best period, power, FAP, spectrum.")
    plot = Output("periodogramPlot", ("target",), "Plot", doc="Power spectrum and folded light curve.")


def stack_lightcurves(lightcurves, *, use_outliers=False, min_points_per_band=1, column="mag", offsets="instrument"):
    """Concatenate light curves: (t, y, dy, bands, groups) with groups = instrument:band (or the band alone)."""
    ts, ys, ds, bs, gs = [], [], [], [], []
    for lc in lightcurves:
        m = np.ones(len(lc), bool) if (use_outliers or "outlier" not in lc.colnames) else ~np.asarray(lc["outlier"], bool)
        if m.sum() < min_points_per_band:
            continue
        band = str(lc.meta.get("band", "x"))
        ts.append(np.asarray(lc["time"], float)[m])
        ys.append(np.asarray(lc[column], float)[m])
        ds.append(np.asarray(lc[f"{column}_err"], float)[m])
        bs.append(np.full(m.sum(), band))
        if offsets == "band" or "instrument" not in lc.colnames:
            inst = np.full(m.sum(), "all")
        else:
            inst = np.asarray(lc["instrument"], str)[m]
        gs.append(np.char.add(np.char.add(inst, ":"), band))
    if not ts:
        return None
    return tuple(np.concatenate(a) for a in (ts, ys, ds, bs, gs))


class PeriodSearchTask(PipelineTask):
    """Lomb-Scargle period, FAP and folded plot for one target over all its bands."""

    dimensions = ("target",)
    Config = PeriodSearchConfig
    Connections = PeriodSearchConnections
    resources = Resources(cores=1, memory_mb=1024, walltime_min=15)

    def run(self, lightcurves, data_id=None):
        cfg = self.config
        offsets = cfg.offsets
        if offsets == "auto":
            tied = bool(lightcurves) and all(lc.meta.get("ensemble") for lc in lightcurves)
            offsets = "band" if tied else "instrument"
        stacked = stack_lightcurves(lightcurves, use_outliers=cfg.use_outliers,
                                    min_points_per_band=cfg.min_points_per_band, offsets=offsets)
        name = (data_id or {}).get("target") or (lightcurves[0].meta.get("target") if lightcurves else "target")
        if stacked is None:
            raise NoWorkFound(f"target {name}: no band has {cfg.min_points_per_band} usable points")
        t, y, dy, bands, groups = stacked
        if not cfg.multiband and len(set(bands)) > 1:
            counts = {b: int(np.sum(bands == b)) for b in set(bands)}
            keep = bands == max(counts, key=counts.get)
            t, y, dy, bands, groups = t[keep], y[keep], dy[keep], bands[keep], groups[keep]
        res = lomb_scargle_search(t, y, dy, bands, groups, min_period=cfg.min_period, max_period=cfg.max_period,
                                  samples_per_peak=cfg.samples_per_peak, n_candidates=cfg.n_candidates,
                                  max_nterms=cfg.max_nterms, clip_sigma=cfg.clip_sigma, fap_method=cfg.fap_method,
                                  n_bootstrap=cfg.n_bootstrap, seed=cfg.seed, method=cfg.method)
        self.log.info("target %s: P = %.6f +- %.6f d, power %.3f, FAP %.2g (%s, %s, nterms %d)", name, res.period,
                      res.period_err, res.power, res.fap, res.fap_method, res.method, res.nterms)
        out = res.summary()
        out["target"] = name
        out["offsets"] = offsets
        return {"periodogram": out, "plot": folded_plot(t, y, dy, bands, groups, res, title=str(name))}
