"""TTV inference: the posterior of a perturbing planet's mass and orbit from a target's transit times.

Forward model TTVFast (``ttv_model``), sampler dynesty (static nested sampling; multimodal period aliases
are why nested sampling and not MCMC), likelihood calls spread over a multiprocessing pool of ``n_cores``
workers. A long run checkpoints into the quantum's ``checkpoint_dir`` and a killed quantum resumes from
there; a previous posterior (``warm_start``) narrows the priors of a new run.

Modelling choices, in one place:
- Free: the perturber's mass and period (log-uniform), eccentricity, argument of pericentre and mean
  longitude at the integration start (uniform; the two angles periodic). Any parameter whose range has
  equal bounds is held fixed there and left out of the sampler (e.g. ``eccentricity_range: [0, 0]``).
- The known planet is circular and coplanar with the perturber; its period and epoch are profiled out of
  the likelihood (``ttv_model``); its mass is fixed at ``known_mass_msun`` unless ``known_mass_range`` is
  given. Transit times alone barely constrain it (changing it from 5.7e-4 to 1e-5 Msun moves the demo's
  transits by ~20 s, against 1-2 minute errors), so freeing it mostly costs sampler time.
- The stellar mass comes from the config.
- The evidence is for the perturber model under that profile convention; ``ln_bayes_factor_vs_linear``
  compares it with a linear ephemeris (no perturber) under the same convention.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from ...astro.jsonable import jsonable
from ...pipeline.connections import Connections, Input, Output
from ...pipeline.moved import old_module_names
from ...pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig
from . import ttv_model as tm

CHECKPOINT_NAME = "ttv_dynesty.pkl"
FINGERPRINT_NAME = "ttv_dynesty.json"
SAMPLE_COLUMNS = ("mass", "period", "eccentricity", "omega", "mean_longitude", "mean_anomaly", "known_mass",
                  "known_t0", "known_period")


def _check_range(v, lo_ok: float | None = None):
    if v is None:
        return v
    if len(v) != 2 or not v[1] >= v[0]:
        raise ValueError(f"expected [low, high] with high >= low, got {v}")
    if lo_ok is not None and v[0] < lo_ok:
        raise ValueError(f"lower bound must be >= {lo_ok}, got {v}")
    return [float(v[0]), float(v[1])]


class TtvFitConfig(TaskConfig):
    stellar_mass_msun: float = Field(1.0, gt=0, description="Host star mass (Msun) used by TTVFast.")
    known_mass_msun: float = Field(3e-4, gt=0, description="Mass of the transiting planet (Msun), held fixed "
                                   "unless known_mass_range is set.")
    known_mass_range: list[float] | None = Field(None, description="[lo, hi] Msun: sample the transiting "
                                                 "planet's mass log-uniformly instead of fixing it.")
    mass_range: list[float] = Field([3e-6, 3e-3], description="Perturber mass prior [lo, hi] (Msun, log-uniform).")
    period_range: list[float] | None = Field(None, description="Perturber period prior [lo, hi] (days, "
                                             "log-uniform); default period_ratio_range x the known period.")
    period_ratio_range: list[float] = Field([1.3, 4.0], description="Perturber period prior as multiples of "
                                            "the known planet's period, when period_range is not set.")
    eccentricity_range: list[float] = Field([0.0, 0.2], description="Perturber eccentricity prior (uniform); "
                                            "[0, 0] fixes a circular orbit.")
    omega_range: list[float] = Field([0.0, 360.0], description="Argument of pericentre prior (deg, uniform).")
    mean_longitude_range: list[float] = Field([0.0, 360.0], description="Mean longitude at the integration "
                                              "start (deg, uniform).")
    inclination_deg: float = Field(90.0, gt=0, le=180, description="Inclination of both (coplanar) orbits.")
    timestep_fraction: float = Field(0.05, gt=0, le=0.1, description="TTVFast step as a fraction of the known "
                                     "period (TTVFast advises <= 1/20 of the innermost period).")
    jitter_minutes: float = Field(0.0, ge=0, description="Extra timing noise added in quadrature to t_obs_err.")
    min_hill_separation: float = Field(2 * np.sqrt(3), ge=0, description="Reject perturbers closer than this "
                                       "many mutual Hill radii (Gladman 1993 stability).")
    min_transits: int = Field(5, ge=3, description="Fewer transit times than this: no work (NoWorkFound).")
    nlive: int = Field(250, ge=10, description="dynesty live points.")
    dlogz: float = Field(0.5, gt=0, description="Stop when the remaining evidence is below this (ln units).")
    sample: Literal["auto", "unif", "rwalk", "slice", "rslice"] = Field("rwalk", description="dynesty "
                                                                        "sampling method.")
    bound: Literal["none", "single", "multi", "balls", "cubes"] = Field("multi", description="dynesty bounds.")
    maxcall: int | None = Field(None, ge=1, description="Stop after this many likelihood calls (None: no cap).")
    seed: int = Field(42, description="Random seed of the sampler.")
    n_cores: int = Field(2, ge=1, description="Worker processes for likelihood calls (the quantum's cores).")
    checkpoint_every_s: float = Field(60.0, gt=0, description="Seconds between checkpoints.")
    progress_every_s: float = Field(30.0, gt=0, description="Seconds between progress log lines.")
    warm_start: str | None = Field(None, description="Previous ttvPosterior (.parq/.parquet or .npz): its "
                                   "central warm_start_mass interval, widened by warm_start_pad, narrows each "
                                   "non-angle prior (angles are referenced to the integration start, which "
                                   "moves with the data, so they keep their range).")
    warm_start_mass: float = Field(0.997, gt=0, lt=1, description="Posterior mass kept by the warm start.")
    warm_start_pad: float = Field(0.5, ge=0, description="Widen the warm-start interval by this fraction of its "
                                  "width on each side (log width for log-uniform priors).")

    @field_validator("mass_range", "period_range", "period_ratio_range", "known_mass_range")
    @classmethod
    def _positive_range(cls, v):
        v = _check_range(v)
        if v is not None and v[0] <= 0:
            raise ValueError(f"bounds must be positive (log-uniform prior), got {v}")
        return v

    @field_validator("eccentricity_range")
    @classmethod
    def _eccentricity_range(cls, v):
        v = _check_range(v, 0.0)
        if v[1] >= 1:
            raise ValueError(f"eccentricity must stay below 1, got {v}")
        return v

    @field_validator("omega_range", "mean_longitude_range")
    @classmethod
    def _angle_range(cls, v):
        return _check_range(v)


def build_priors(config: TtvFitConfig, known_period: float) -> tuple[tm.Prior, ...]:
    """The config's prior ranges as Prior objects (the period range from the ratio if not given in days)."""
    period = config.period_range or [r * known_period for r in config.period_ratio_range]
    known = config.known_mass_range or config.known_mass_msun
    return (tm.make_prior("mass", config.mass_range), tm.make_prior("period", period),
            tm.make_prior("eccentricity", config.eccentricity_range),
            tm.make_prior("omega", config.omega_range if config.eccentricity_range[1] > 0 else 90.0),
            tm.make_prior("mean_longitude", config.mean_longitude_range), tm.make_prior("known_mass", known))


# --- warm start -------------------------------------------------------------------------------------------
def load_posterior(path: str | Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Columns and normalised weights of a previous ttvPosterior (Parquet table or NPZ of columns)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"warm_start: {path} does not exist")
    if path.suffix == ".npz":
        with np.load(path) as z:
            cols = {k: np.asarray(z[k], dtype=float) for k in z.files}
    else:
        from astropy.table import Table

        try:
            t = Table.read(path, format="parquet")
        except Exception as exc:  # noqa: BLE001 - name the file whatever the reader's complaint
            raise ValueError(f"warm_start: cannot read {path} as a Parquet ttvPosterior: {exc}") from exc
        cols = {c: np.asarray(t[c], dtype=float) for c in t.colnames}
    n = len(next(iter(cols.values()))) if cols else 0
    if n == 0:
        raise ValueError(f"warm_start: {path} holds no samples")
    w = cols.pop("weight", np.ones(n))
    if not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise ValueError(f"warm_start: {path} has invalid weights")
    return cols, w / w.sum()


def narrow_priors(priors, cols, weights, mass: float = 0.997, pad: float = 0.5):
    """Shrink each non-periodic free prior to the previous posterior's central interval (padded), inside the
    configured range. Returns (priors, {name: [old, new]} for those changed)."""
    from dynesty.utils import quantile

    out, changed = [], {}
    q = [(1 - mass) / 2, 1 - (1 - mass) / 2]
    for p in priors:
        x = cols.get(p.name)
        if p.fixed or p.periodic or x is None:
            out.append(p)
            continue
        fwd, inv = (np.log, np.exp) if p.kind == "log" else (lambda v: v, lambda v: v)
        ok = np.isfinite(x) & (x > 0 if p.kind == "log" else True)
        if ok.sum() < 2:
            out.append(p)
            continue
        lo, hi = quantile(fwd(x[ok]), q, weights=weights[ok])
        width = hi - lo
        if width <= 0:
            out.append(p)
            continue
        new_lo = max(p.lo, float(inv(lo - pad * width)))
        new_hi = min(p.hi, float(inv(hi + pad * width)))
        if not new_hi > new_lo or (new_lo, new_hi) == (p.lo, p.hi):
            out.append(p)
            continue
        new = tm.Prior(p.name, new_lo, new_hi, p.kind, p.periodic)
        changed[p.name] = [[p.lo, p.hi], [new_lo, new_hi]]
        out.append(new)
    return tuple(out), changed


# --- sampling -------------------------------------------------------------------------------------------
def fingerprint(model: tm.TtvModel, sampler_settings: dict) -> str:
    """What a checkpoint must match to be resumed: the data, the priors, the model and sampler settings."""
    import dynesty

    d = model.data
    h = hashlib.sha256()
    for a in (d.epochs, d.times, d.errors):
        h.update(np.ascontiguousarray(a, dtype=float).tobytes())
    h.update(json.dumps({"priors": [p.describe() | {"name": p.name} for p in model.priors],
                         "model": [model.stellar_mass, model.inclination, model.timestep_fraction,
                                   model.min_hill_separation, d.t_ref, d.period],
                         "sampler": sampler_settings, "dynesty": dynesty.__version__}, sort_keys=True).encode())
    return h.hexdigest()


class _ProgressLog:
    """dynesty print_func that writes a log line every few seconds instead of a progress bar."""

    def __init__(self, log, every_s: float):
        self.log, self.every, self.last = log, every_s, time.monotonic()

    def __call__(self, results, niter, ncall, add_live_it=None, dlogz=None, **_):
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        self.log.info("dynesty: iteration %d, %d calls, logL* %.2f, logZ %.2f", niter, ncall,
                      results.loglstar, results.logz)


def sample_posterior(model: tm.TtvModel, *, nlive: int = 250, dlogz: float = 0.5, sample: str = "rwalk",
                     bound: str = "multi", cores: int = 1, seed: int = 42, maxcall: int | None = None,
                     checkpoint_file: str | Path | None = None, checkpoint_every: float = 60.0,
                     progress_every: float = 30.0, log=None):
    """Run (or resume) static nested sampling; returns (dynesty Results, info dict).

    With a checkpoint file, the sampler state is saved every ``checkpoint_every`` seconds and at the end; a
    later call with the same model and settings resumes from it (``info['resumed']``, ``info['ncall_at_resume']``).
    A checkpoint from other data or settings is discarded, never resumed.
    """
    import logging
    import multiprocessing as mp

    import dynesty

    log = log or logging.getLogger(__name__)
    if not model.free:
        raise ValueError("every TTV parameter is fixed (all prior ranges have equal bounds); nothing to sample")
    settings = {"nlive": nlive, "sample": sample, "bound": bound, "seed": seed}
    ckpt = Path(checkpoint_file) if checkpoint_file else None
    fp_path = ckpt.with_suffix(".json") if ckpt else None
    fp = fingerprint(model, settings)
    resume = False
    if ckpt and ckpt.exists():
        old = json.loads(fp_path.read_text()).get("fingerprint") if fp_path.exists() else None
        if old == fp:
            resume = True
        else:
            log.warning("checkpoint %s is for other data or settings; starting afresh", ckpt)
            ckpt.unlink()
    tm.activate(model)
    pool_ctx = (mp.get_context("spawn").Pool(cores, tm.activate, (model,)) if cores > 1 else nullcontext(None))
    t0 = time.time()
    info = {"resumed": False, "ncall_at_resume": 0, "iterations_at_resume": 0, "cores": cores,
            "checkpoint": str(ckpt) if ckpt else None}
    with pool_ctx as pool:
        sampler = None
        if resume:
            try:
                with old_module_names():  # a checkpoint written before the tasks/ reorganisation names old modules
                    sampler = dynesty.NestedSampler.restore(str(ckpt), pool=pool)
            except Exception as exc:  # noqa: BLE001 - an unreadable checkpoint only costs the work in it
                log.warning("cannot restore checkpoint %s (%s); starting afresh", ckpt, exc)
            else:
                info.update(resumed=True, ncall_at_resume=int(sampler.ncall), iterations_at_resume=int(sampler.it))
                log.info("resuming from %s at iteration %d, %d likelihood calls", ckpt, sampler.it, sampler.ncall)
        if sampler is None:
            resume = False
            sampler = dynesty.NestedSampler(
                tm.active_loglike, tm.active_prior_transform, model.ndim, nlive=nlive, bound=bound,
                sample=sample, periodic=model.periodic or None, blob=True, pool=pool,
                queue_size=cores if pool is not None else None, rstate=np.random.default_rng(seed))
            if ckpt:
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                fp_path.write_text(json.dumps({"fingerprint": fp, "settings": settings}))
        if resume and sampler.added_live:
            log.info("checkpoint %s holds a finished run; using it as is", ckpt)
        else:
            sampler.run_nested(dlogz=dlogz, maxcall=maxcall, print_progress=True,
                               print_func=_ProgressLog(log, progress_every),
                               checkpoint_file=str(ckpt) if ckpt else None, checkpoint_every=checkpoint_every,
                               resume=resume)
        results = sampler.results
        info["ncall"] = int(sampler.ncall)
    info["wall_time_s"] = time.time() - t0
    return results, info


# --- outputs ---------------------------------------------------------------------------------------------
def posterior_columns(model: tm.TtvModel, results) -> dict[str, np.ndarray]:
    cols = model.derived(results.samples, results.blob)
    cols["logl"] = np.asarray(results.logl, dtype=float)
    cols["weight"] = results.importance_weights()
    return cols


def credible_intervals(cols: dict[str, np.ndarray], names) -> dict[str, dict[str, float]]:
    """Weighted median and central 68% / 95% intervals per parameter."""
    from dynesty.utils import quantile

    out = {}
    for n in names:
        q = quantile(cols[n], [0.025, 0.16, 0.5, 0.84, 0.975], weights=cols["weight"])
        out[n] = {"median": float(q[2]), "lo68": float(q[1]), "hi68": float(q[3]), "lo95": float(q[0]),
                  "hi95": float(q[4])}
    return out


def max_likelihood(model: tm.TtvModel, cols: dict[str, np.ndarray]) -> dict:
    """The sampled point of highest likelihood (a real draw, never a combination of marginal medians)."""
    i = int(np.argmax(cols["logl"]))
    out = {n: float(cols[n][i]) for n in SAMPLE_COLUMNS}
    out["logl"] = float(cols["logl"][i])
    out["chi2"] = float(-2 * (cols["logl"][i] - model._norm))
    return out


def corner_figure(model: tm.TtvModel, results, cols, ml: dict, title: str = ""):
    """dynesty's corner plot of the free parameters (log10 of masses), the maximum-likelihood point marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from dynesty import plotting
    from dynesty.utils import results_substitute
    from matplotlib.figure import Figure

    names = list(model.free)
    columns, labels, mark = [], [], []
    for n in names:
        x, v = cols[n], ml[n]
        if n in ("mass", "known_mass"):
            x, v = np.log10(x), np.log10(v)
            labels.append(f"log10 {n} [{tm.PARAMETERS[n][0]}]")
        else:
            labels.append(f"{n} [{tm.PARAMETERS[n][0]}]" if tm.PARAMETERS[n][0] else n)
        columns.append(x)
        mark.append(v)
    res = results_substitute(results, {"samples": np.column_stack(columns)})
    k = len(names)
    fig = Figure(figsize=(2.2 * k + 1, 2.2 * k + 1))
    axes = fig.subplots(k, k, squeeze=False)
    plotting.cornerplot(res, labels=labels, truths=mark, truth_color="tab:red", quantiles=[0.025, 0.5, 0.975],
                        smooth=0.06, fig=(fig, axes), show_titles=True, title_fmt=".3g", max_n_ticks=4)
    fig.suptitle(f"{title}  ln Z = {results.logz[-1]:.2f} ± {results.logzerr[-1]:.2f}  (red: max likelihood)",
                 fontsize=10)
    return fig


# --- the task --------------------------------------------------------------------------------------------
class TtvFitConnections(Connections):
    transit_times = Input("transitTimes", ("target",), "Table", doc="Mid-transit times and linear ephemeris.")
    posterior = Output("ttvPosterior", ("target",), "Table", doc="Nested-sampling samples with weights.")
    summary = Output("ttvSummary", ("target",), "StructuredData",
                     doc="Evidence, credible intervals, maximum-likelihood sample, priors, sampler statistics.")
    corner = Output("ttvCorner", ("target",), "Plot", doc="Corner plot of the free parameters.")


class TtvFitTask(PipelineTask):
    """Nested sampling of a perturber's mass, period, eccentricity and angles from a target's transit times."""

    dimensions = ("target",)
    Config = TtvFitConfig
    Connections = TtvFitConnections
    resources = Resources(cores=2, memory_mb=2048, walltime_min=240.0, resource_class="mcmc")

    @classmethod
    def resources_for(cls, config: TtvFitConfig) -> Resources:
        """The hint with the configured number of cores (the pool size)."""
        return cls.resources.model_copy(update={"cores": config.n_cores})

    def run(self, transit_times, checkpoint_dir=None, records=None, data_id=None):
        cfg = self.config
        target = (data_id or {}).get("target") or (records or {}).get("target", {}).get("name") or "?"
        name = f"transitTimes for target {target}"
        n_good = int(np.sum(np.isfinite(np.asarray(transit_times["t_obs"], dtype=float)))) \
            if "t_obs" in transit_times.colnames else 0
        if "t_obs" in transit_times.colnames and n_good < cfg.min_transits:
            raise NoWorkFound(f"{name}: {n_good} transit time(s), ttvFit needs min_transits={cfg.min_transits}")
        data = tm.TransitData.from_table(transit_times, jitter_days=cfg.jitter_minutes / 1440.0, name=name)
        priors = build_priors(cfg, data.period)
        warm = None
        if cfg.warm_start:
            prev, w = load_posterior(cfg.warm_start)
            priors, changed = narrow_priors(priors, prev, w, cfg.warm_start_mass, cfg.warm_start_pad)
            warm = {"path": cfg.warm_start, "narrowed": changed}
            self.log.info("warm start from %s narrowed %s", cfg.warm_start, ", ".join(changed) or "nothing")
        model = tm.TtvModel(data, priors, cfg.stellar_mass_msun, cfg.inclination_deg, cfg.timestep_fraction,
                            cfg.min_hill_separation)
        ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
        self.log.info("%s: %d transits, free %s, nlive %d, %d core(s)", target, data.n, ", ".join(model.free),
                      cfg.nlive, cfg.n_cores)
        results, info = sample_posterior(
            model, nlive=cfg.nlive, dlogz=cfg.dlogz, sample=cfg.sample, bound=cfg.bound, cores=cfg.n_cores,
            seed=cfg.seed, maxcall=cfg.maxcall, checkpoint_file=ckpt, checkpoint_every=cfg.checkpoint_every_s,
            progress_every=cfg.progress_every_s, log=self.log)
        cols = posterior_columns(model, results)
        intervals = credible_intervals(cols, SAMPLE_COLUMNS)
        ml = max_likelihood(model, cols)
        null = model.null_loglike()
        logz, logz_err = float(results.logz[-1]), float(results.logzerr[-1])
        self.log.info("%s: ln Z %.2f ± %.2f (linear ephemeris ln L %.2f); %d calls in %.1f s", target, logz,
                      logz_err, null, info["ncall"], info["wall_time_s"])

        from astropy.table import Table

        table = Table({n: cols[n] for n in SAMPLE_COLUMNS + ("logl", "weight")})
        units = {n: tm.PARAMETERS[n][0] for n in tm.PARAMETERS} | {
            "mean_anomaly": "deg", "known_t0": "d", "known_period": "d", "logl": "", "weight": ""}
        for n, u in units.items():
            table[n].unit = {"Msun": "solMass"}.get(u, u) or None
        model_info = {
            "stellar_mass_msun": cfg.stellar_mass_msun, "inclination_deg": cfg.inclination_deg,
            "known_mass": "free" if cfg.known_mass_range else cfg.known_mass_msun,
            "linear_period": data.period, "t_ref": data.t_ref, "epoch_ref": data.epoch_ref,
            "integration_start": model.integration_start(), "timestep_days": data.period * cfg.timestep_fraction,
            "time_system": transit_times.meta.get("time_system"), "coordinates": "Jacobi (TTVFast input_flag 0)",
            "ephemeris_in": {k: transit_times.meta.get(k) for k in ("period", "period_err", "t0", "t0_err")},
        }
        table.meta.update(jsonable({"target": target, "log_evidence": logz, "log_evidence_err": logz_err,
                           "free_parameters": list(model.free), "units": units, "model": model_info}))
        summary = {
            "target": target, "target_record": (records or {}).get("target"), "n_transits": data.n,
            "epochs": [int(e) for e in data.epochs],
            "free_parameters": list(model.free),
            "priors": {p.name: p.describe() for p in model.priors}, "warm_start": warm,
            "log_evidence": logz, "log_evidence_err": logz_err, "log_likelihood_linear": null,
            "ln_bayes_factor_vs_linear": logz - null,
            "credible_intervals": intervals, "max_likelihood": ml, "units": units, "model": model_info,
            "sampler": {"method": "dynesty static nested sampling", "nlive": cfg.nlive, "dlogz": cfg.dlogz,
                        "sample": cfg.sample, "bound": cfg.bound, "seed": cfg.seed, "maxcall": cfg.maxcall,
                        "niter": int(results.niter), "n_samples": len(table),
                        "efficiency_percent": float(results.eff),
                        "n_effective": float(1.0 / np.sum(cols["weight"] ** 2))} | info,
        }
        fig = corner_figure(model, results, cols, ml, title=f"{target}: {data.n} transits")
        return {"posterior": table, "summary": jsonable(summary), "corner": fig}
