"""The two transit tasks: ``transitSearch`` (detrend + BLS, refined by a batman fit) and ``transitTiming``
(per-transit mid-times, linear ephemeris, O-C)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ....pipeline.connections import Connections, Input, Output
from ....pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig
from .fit import DEFAULT_LIMB_DARKENING, fit_global, measure_transit_times, oc_plot, oc_table
from .search import detrend_and_search, search_plot

__all__ = ["TransitSearchConfig", "TransitSearchConnections", "TransitSearchTask", "TransitTimingConfig",
           "TransitTimingConnections", "TransitTimingTask", "stack_flux"]


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
