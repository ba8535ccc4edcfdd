"""Period search on a target's light curves: Lomb-Scargle, refined with a multi-harmonic model.

Stage 7a of the pipeline map. Search, over an automatic frequency grid (1/baseline/``samples_per_peak`` spacing
up to ``1/min_period``):

- one band: astropy's Lomb-Scargle (``fastnifty`` from nifty-ls when it is installed, astropy's ``fast``
  otherwise) on the full grid;
- several bands: ``multiband.py``'s shared-phase multiband power (VanderPlas & Ivezic 2015: one sinusoid
  shared by all bands, an offset per band; astropy's ``LombScargleMultiband(nterms_base=1, nterms_band=0)``)
  from per-band trigonometric sums by non-uniform FFT, on a grid ``coarse_samples_per_peak`` points per peak
  wide, and summed exactly on the fine grid around its strongest peaks. Its cost is that of a few single-band
  spectra, not a least-squares solve per frequency (astropy's ``flexible`` method: 40-150x a single-band
  search on a 5-band, 10-year light curve). ``spectrum`` is this statistic on the coarse grid.

The false-alarm probability of the chosen period is Baluev's analytic bound by default, a bootstrap on request.

Refinement: a sparse ground-based light curve has aliases of almost equal power and a non-sinusoidal
variable (an RR Lyrae) biases a one-term peak, so the strongest few peaks are re-fitted on a fine grid with the
shared-shape model of ``harmonic.py`` (harmonics shared by all bands, amplitude scaled per band, one offset per
instrument x band: each calibration has its own zero-point systematics), with the number of harmonics chosen by
BIC and points beyond ``clip_sigma`` of the model dropped. The best chi-square wins. Light curves already tied
across instruments by ensemble photometry (``meta["ensemble"]``) get one offset per band instead: a free offset
for an instrument's handful of visits would throw away their phase information.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import Field

from ...pipeline.connections import Connections, Input, Output
from ...pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig
from .harmonic import HarmonicFitter, HarmonicModel, harmonic_fit
from .multiband import fast_method, fast_power, local_maxima, multiband_spectrum

__all__ = ["HarmonicModel", "PeriodResult", "PeriodSearchConfig", "PeriodSearchConnections", "PeriodSearchTask",
           "fast_method", "folded_plot", "frequency_grid", "harmonic_fit", "lomb_scargle_search",
           "select_band", "stack_lightcurves"]


def grid_limits(t, *, min_period: float, max_period: float | None, samples_per_peak: float):
    """(fmin, fmax, df) of the search grid in 1/day: df = 1/(samples_per_peak * baseline), from 1/max_period
    (default: the baseline) to 1/min_period."""
    baseline = float(np.ptp(t))
    if baseline <= 0:
        raise ValueError("light curve spans no time")
    df = 1.0 / (samples_per_peak * baseline)
    fmin = 1.0 / max_period if max_period else 1.0 / baseline
    fmax = 1.0 / min_period
    if fmax <= fmin:
        raise ValueError(f"min_period {min_period} d is not below the longest period searched {1 / fmin:.3f} d")
    return max(fmin, df), fmax, df


def frequency_grid(t, *, min_period: float, max_period: float | None, samples_per_peak: float) -> np.ndarray:
    """Evenly spaced frequencies (1/day) from 1/max_period (default: the baseline) to 1/min_period."""
    fmin, fmax, df = grid_limits(t, min_period=min_period, max_period=max_period, samples_per_peak=samples_per_peak)
    return np.arange(fmin, fmax, df)


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
            "band_scales": dict(zip(self.model.bands, self.model.scales.tolist(), strict=True)),
            "group_offsets": dict(zip(self.model.groups, self.model.offsets.tolist(), strict=True)),
            "n_points": self.n_points, "n_clipped": self.n_clipped, "bands": self.bands, "chi2_red": self.chi2_red,
            "n_frequencies": int(len(self.grid)), "min_frequency": float(self.grid[0]),
            "max_frequency": float(self.grid[-1]), "candidates": self.candidates,
            "spectrum": {"frequency": freq[np.arange(len(j)), j].tolist(), "power": pw[np.arange(len(j)), j].tolist()},
        }


def _refine(fitter: HarmonicFitter, f0, df, nterms, n_fine=9):
    """Chi-square minimum within one grid step of f0: a scan, a zoomed scan around its lowest point, then the
    vertex of the parabola through the lowest three. The band scales of the fit at f0 are held fixed across
    the scans (one linear solve per frequency; the amplitude ratios do not change across one peak).
    Returns the zoomed scan (frequencies, chi-squares), the index of its lowest point and the vertex."""
    scales = fitter.model(f0, nterms).scales
    ff = np.linspace(f0 - df, f0 + df, n_fine)
    k = int(np.argmin(fitter.chi2(ff, nterms, scales)))
    step = ff[1] - ff[0]
    ff = np.linspace(ff[k] - step, ff[k] + step, n_fine)
    chi = fitter.chi2(ff, nterms, scales)
    k = int(np.argmin(chi))
    f_min = ff[k]
    if 0 < k < len(ff) - 1:
        c2, c1, _ = np.polyfit(ff[k - 1:k + 2] - ff[k], chi[k - 1:k + 2], 2)
        if c2 > 0:
            f_min = ff[k] + float(np.clip(-c1 / (2 * c2), ff[k - 1] - ff[k], ff[k + 1] - ff[k]))
    return ff, chi, k, f_min


def lomb_scargle_search(t, y, dy, bands=None, groups=None, *, min_period=0.1, max_period=None,
                        samples_per_peak=10.0, n_candidates=5, max_nterms=3, clip_sigma=5.0,
                        fap_method="baluev", n_bootstrap=300, seed=0, method="auto",
                        coarse_samples_per_peak=3.0, n_coarse_peaks=50) -> PeriodResult:
    """Search, then refine the best peaks; see the module docstring. ``y`` in magnitudes (or any flux unit).

    Clipping: a point is dropped when its residual from the refined model exceeds ``clip_sigma`` times its
    error scaled by its band's robust residual scatter (at least 1).
    """
    from astropy.stats import mad_std

    t, y, dy = (np.asarray(a, dtype=float) for a in (t, y, dy))
    n = len(t)
    bands = np.asarray(bands if bands is not None else np.full(n, "x"), dtype=str)
    groups = np.asarray(groups if groups is not None else bands, dtype=str)
    ok = np.isfinite(t) & np.isfinite(y) & np.isfinite(dy) & (dy > 0)
    t, y, dy, bands, groups = t[ok], y[ok], dy[ok], bands[ok], groups[ok]
    if len(t) < 3 * (1 + 2 * 1) + len(np.unique(groups)):
        raise ValueError(f"{len(t)} points are too few for a period search")
    if fap_method not in ("baluev", "bootstrap"):
        raise ValueError(f"fap_method must be 'baluev' or 'bootstrap', not {fap_method!r}")
    fmin, fmax, df = grid_limits(t, min_period=min_period, max_period=max_period, samples_per_peak=samples_per_peak)
    ubands = sorted(set(bands))
    multiband = len(ubands) > 1
    single = fast_method() if method == "auto" else method
    # centre each band on its weighted mean so the one-term search and the FAP see variability only
    yc = y.copy()
    for b in ubands:
        m = bands == b
        yc[m] -= np.average(y[m], weights=dy[m] ** -2)
    spectrum_kw = {"fmin": fmin, "fmax": fmax, "df": df, "coarse_samples_per_peak": coarse_samples_per_peak,
                   "samples_per_peak": samples_per_peak, "n_peaks": max(n_coarse_peaks, n_candidates)}
    if multiband:
        used = "multiband-shared-phase"
        spec = multiband_spectrum(t, yc, dy, bands, **spectrum_kw)
        grid, power, cand_f = spec.grid, spec.power, spec.peak_frequency[:n_candidates]
    else:
        used = single
        grid = np.arange(fmin, fmax, df)
        power = fast_power(t, yc, dy, grid, single)
        cand_f = grid[local_maxima(power)[:n_candidates]]

    keep = np.ones(len(t), dtype=bool)
    best = None
    for it in range(4):  # refine, clip points far from the best model, refine again
        fitter = HarmonicFitter(t[keep], y[keep], dy[keep], groups[keep], bands[keep])

        def refined(f0, nt, fitter=fitter):
            ff, chi, k, f_min = _refine(fitter, f0, df, nt)
            model = fitter.model(f_min, nt)  # the scales free again at the minimum
            return {"f": f_min, "chi2": model.chi2, "bic": model.chi2 + model.n_params * np.log(len(fitter.t)),
                    "nterms": nt, "ff": ff, "chi": chi, "k": k, "npar": model.n_params, "model": model}

        # harmonics by BIC at the strongest peak, then the candidates compared with that model
        nt = min((refined(cand_f[0], n) for n in range(1, max_nterms + 1)), key=lambda r: r["bic"])["nterms"]
        results = [refined(f0, nt) for f0 in cand_f]
        best = min(results, key=lambda r: r["chi2"])
        model = best["model"]
        resid = (y - model(t, groups, bands)) / dy
        new_keep = np.ones(len(t), dtype=bool)
        for b in ubands:  # each band against its own scatter, never below the quoted errors (small groups overfit)
            m = bands == b
            scale = max(float(mad_std(resid[m & keep], ignore_nan=True)), 1.0)
            new_keep[m] = np.abs(resid[m]) <= clip_sigma * scale  # NaN -> False
        if np.array_equal(new_keep, keep) or it == 3 or new_keep.sum() < len(t) // 2:
            break
        keep = new_keep

    assert best is not None  # the loop runs at least once
    f_best = float(best["f"])
    npts = int(keep.sum())
    chi2_red = float(best["chi2"] / max(npts - best["npar"], 1))
    ff, chi, k = best["ff"], best["chi"], best["k"]
    period_err = _period_error(ff, chi, k, chi2_red, f_best)
    power_best = _one_term_power(t, yc, dy, bands, f_best, multiband)
    if fap_method == "baluev":
        from astropy.timeseries.periodograms.lombscargle._statistics import fap_baluev

        fap = float(fap_baluev(power_best, fmax, t, yc, dy, normalization="standard"))
    elif multiband:  # the shared-phase power against the search's highest peaks on resampled data
        fap = _bootstrap_fap(power_best, t, yc, dy, bands, n_bootstrap, seed,
                             lambda yy, ee: float(multiband_spectrum(t, yy, ee, bands, **spectrum_kw).peak_power[0]))
    else:
        fap = _bootstrap_fap(power_best, t, yc, dy, bands, n_bootstrap, seed,
                             lambda yy, ee: float(np.max(fast_power(t, yy, ee, grid, single))))
    cands = sorted({round(1 / r["f"], 8): r for r in results}.values(), key=lambda r: r["chi2"])
    return PeriodResult(
        period=1 / f_best, period_err=period_err, frequency=f_best, power=power_best, fap=fap,
        fap_method=fap_method, method=used, nterms=nt, model=model, n_points=npts, n_clipped=int((~keep).sum()),
        bands=ubands, chi2_red=chi2_red, grid=grid, spectrum=power, keep=keep,
        candidates=[{"period": float(1 / r["f"]), "chi2": float(r["chi2"])} for r in cands])


def _one_term_power(t, yc, dy, bands, f, multiband) -> float:
    """Lomb-Scargle power of one sinusoid at f: shared by all bands (one offset each) when there are several
    (astropy's ``LombScargleMultiband``, one frequency, so its per-frequency solve costs nothing)."""
    from astropy.timeseries import LombScargle, LombScargleMultiband

    if multiband:
        p = LombScargleMultiband(t, yc, bands, dy, nterms_base=1, nterms_band=0).power(np.array([f]))
    else:
        p = LombScargle(t, yc, dy).power(np.array([f]), method="slow")
    return float(np.asarray(p).ravel()[0])


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


def _bootstrap_fap(observed, t, y, dy, bands, n_bootstrap, seed, peak_of) -> float:
    """Share of resampled light curves (values drawn with replacement within each band, times kept) whose
    highest peak (``peak_of(y, dy)``) reaches ``observed``; resolution 1/n_bootstrap."""
    rng = np.random.default_rng(seed)
    idx_by_band = [np.flatnonzero(bands == b) for b in np.unique(bands)]
    maxima = np.empty(n_bootstrap)
    for i in range(n_bootstrap):
        pick = np.empty(len(t), dtype=int)
        for idx in idx_by_band:
            pick[idx] = rng.choice(idx, size=len(idx), replace=True)
        maxima[i] = peak_of(y[pick], dy[pick])
    return float((np.sum(maxima >= observed) + 1) / (n_bootstrap + 1))


def folded_plot(t, y, dy, bands, groups, result: PeriodResult, title: str = ""):
    """Two panels: power spectrum; light curve folded on the period, group offsets removed, model drawn."""
    from matplotlib.figure import Figure

    m = result.model
    offsets = dict(zip(m.groups, m.offsets, strict=True))
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
    for b, scale in zip(m.bands, m.scales, strict=True):
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
    band: str | None = Field(None, description="Search this band alone (e.g. r); an error names the bands present when it has no light curve. Default: all bands together (see multiband).")
    multiband: bool = Field(True, description="With no `band`: search all bands together when more than one has data; false: the band with most points alone.")
    coarse_samples_per_peak: float = Field(3.0, gt=0, description="Grid points per peak width of the multiband search's coarse grid (its peaks are then found again on the samples_per_peak grid).")
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


def select_band(bands, band, multiband, name, lightcurves=(), min_points=1) -> np.ndarray:
    """Mask of the points searched: ``band`` alone when set (ValueError naming the target and the bands present
    when it is absent or too thin), else all of them (``multiband``) or the band with most points."""
    present = sorted(set(bands.tolist()))
    if band is not None:
        if band not in present:
            given = sorted({str(lc.meta.get("band", "x")) for lc in lightcurves} - set(present))
            thin = f"; {', '.join(given)} had fewer than {min_points} usable points" if given else ""
            raise ValueError(f"target {name}: periodSearch band {band!r} has no light curve to search "
                             f"(bands present: {', '.join(present)}{thin})")
        return bands == band
    if multiband or len(present) == 1:
        return np.ones(len(bands), bool)
    counts = {b: int(np.sum(bands == b)) for b in present}
    return bands == max(counts, key=counts.__getitem__)


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
        keep = select_band(stacked[3], cfg.band, cfg.multiband, name, lightcurves, cfg.min_points_per_band)
        t, y, dy, bands, groups = (a[keep] for a in stacked)
        res = lomb_scargle_search(t, y, dy, bands, groups, min_period=cfg.min_period, max_period=cfg.max_period,
                                  samples_per_peak=cfg.samples_per_peak, n_candidates=cfg.n_candidates,
                                  max_nterms=cfg.max_nterms, clip_sigma=cfg.clip_sigma, fap_method=cfg.fap_method,
                                  n_bootstrap=cfg.n_bootstrap, seed=cfg.seed, method=cfg.method,
                                  coarse_samples_per_peak=cfg.coarse_samples_per_peak)
        self.log.info("target %s: P = %.6f +- %.6f d, power %.3f, FAP %.2g (%s, %s, nterms %d)", name, res.period,
                      res.period_err, res.power, res.fap, res.fap_method, res.method, res.nterms)
        out = res.summary()
        out["target"] = name
        out["offsets"] = offsets
        return {"periodogram": out, "plot": folded_plot(t, y, dy, bands, groups, res, title=str(name))}
