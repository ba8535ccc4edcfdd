"""TTV inference: a joint fit of every planet of a system with transit times, plus optional perturbers.

One quantum per field gathers every ``transitTimes`` dataset of the field's targets (the ingest of a
multi-planet file puts K2-24's planets in targets K2-24b and K2-24c of field K2-24; a single transit host is
its own field): one planetary system per field, or the subset named by ``targets``. Forward model TTVFast
(``ttv_model``), sampler dynesty (``ttv_sampling``), priors per planet (``ttv_priors``), figures
(``ttv_plots``).

Modelling choices, in one place:
- Every body has a free mass, period, phase, eccentricity and omega (e cos w, e sin w reported).
  Transiting planets' period and t0 windows centre on their linear ephemerides; perturbers' periods come
  from the config (days, or multiples of the shortest transiting period).
- ``perturbers`` unset: one perturber when the system has a single transiting planet (it cannot have TTVs
  alone), none otherwise. With perturbers, the fit is repeated without them and both evidences reported.
- Stellar mass: ``stellar_masses[system]``, else the ``stellar_mass`` of the planets' or their host's target
  record (``openastro-butler define-targets``; the field's target records travel with the quantum), else
  ``stellar_mass_msun``.
- The step is ``timestep_fraction`` of the shortest period in the model; at the maximum-likelihood sample,
  halving it must move the model times by less than ``step_check_sigma`` sigma, else the summary warns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ...astro.jsonable import jsonable
from ...pipeline.connections import Connections, Input, Output
from ...pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig
from . import ttv_model as tm
from .ttv_plots import corner_figure, oc_figure
from .ttv_priors import DEFAULTS, BodyPriors, EccCoordinates, PerturberPriors, body_priors
from .ttv_sampling import available_cores, load_posterior, narrow_priors, run_agreement, sample_posterior

CHECKPOINT_NAME = "ttv_dynesty.pkl"
CHECKPOINT_NULL = "ttv_dynesty_without_perturbers.pkl"
NLIVE_PER_DIMENSION = 25  # live points per free parameter of each run (n_runs of them are merged)
NLIVE_MIN = 100


class TtvFitConfig(TaskConfig):
    stellar_mass_msun: float = Field(1.0, gt=0, description="Host star mass (Msun) when neither stellar_masses "
                                     "nor the dimension records give one.")
    stellar_masses: dict[str, float] = Field(default_factory=dict, description="Stellar mass (Msun) per "
                                             "system (field name).")
    targets: list[str] | None = Field(None, description="Fit only these targets of the field (default: every "
                                      "target with transit times).")
    planet_defaults: BodyPriors = Field(DEFAULTS, description="Priors of every planet unless overridden (fields "
                                        "left out keep their defaults, ttv_priors.DEFAULTS).")
    planets: dict[str, BodyPriors] = Field(default_factory=dict, description="Per-planet prior overrides, keyed "
                                           "by target name (e.g. K2-24b).")
    perturbers: list[PerturberPriors] | None = Field(None, description="Non-transiting planets (name, priors); "
                                                     "unset: one for a lone transiting planet, else none.")
    compare_without_perturbers: bool = Field(True, description="Also sample the model without the perturbers "
                                             "and report both evidences.")
    eccentricity_coordinates: EccCoordinates = Field(
        "polar", description="The sampler's eccentricity coordinates: polar (e, omega) or cartesian (sqrt(e) cos w, "
        "sqrt(e) sin w; e cos w, e sin w for a rayleigh prior), the same prior; cartesian keeps a near-resonant "
        "pair's eccentricity degeneracy a straight valley (sqrt_uniform has no Cartesian form).")
    inclination_deg: float = Field(90.0, gt=0, le=180, description="Inclination of every orbit without its own "
                                   "inclination_deg (planets / perturbers).")
    timestep_fraction: float = Field(0.05, gt=0, le=0.1, description="TTVFast step as a fraction of the "
                                     "shortest period in the model (TTVFast advises <= 1/20).")
    step_check_sigma: float = Field(0.1, gt=0, description="Warn when halving the step moves the best-fit "
                                    "model times by this many sigma or more.")
    jitter_minutes: float = Field(0.0, ge=0, description="Extra timing noise added in quadrature to t_obs_err.")
    min_hill_separation: float = Field(2 * np.sqrt(3), ge=0, description="Reject adjacent planets closer than "
                                       "this many mutual Hill radii (Gladman 1993 stability).")
    min_transits: int = Field(3, ge=3, description="Planets with fewer transit times are left out; none left: "
                              "no work (NoWorkFound).")
    nlive: int | None = Field(None, ge=10, description="dynesty live points of each run (None: "
                              "NLIVE_PER_DIMENSION per free parameter, at least NLIVE_MIN).")
    n_runs: int = Field(4, ge=1, description="Independent nested-sampling runs (own random streams), merged by "
                        "dynesty.utils.merge_runs; several keep every mode of a multimodal posterior and let the "
                        "summary say whether the runs agree (run_agreement).")
    dlogz: float = Field(0.5, gt=0, description="Stop when the remaining evidence is below this (ln units).")
    sample: Literal["auto", "unif", "rwalk", "slice", "rslice"] = Field("rwalk", description="dynesty "
                                                                        "sampling method.")
    bound: Literal["none", "single", "multi", "balls", "cubes"] = Field("multi", description="dynesty bounds.")
    maxcall: int | None = Field(None, ge=1, description="Stop after this many likelihood calls (None: no cap).")
    seed: int = Field(42, description="Random seed of the sampler.")
    n_cores: int | None = Field(None, ge=1, description="Worker processes for likelihood calls (None: the cores "
                                "this worker has: its CPU affinity over Parsl's workers on the node).")
    n_oc_draws: int = Field(40, ge=0, description="Posterior draws drawn on the O-C plot.")
    checkpoint_every_s: float = Field(60.0, gt=0, description="Seconds between checkpoints.")
    progress_every_s: float = Field(30.0, gt=0, description="Seconds between progress log lines.")
    warm_start: str | None = Field(None, description="Previous ttvPosterior (.parq/.parquet or .npz): its "
                                   "central warm_start_mass interval, widened by warm_start_pad, narrows each "
                                   "uniform / log-uniform, non-angle prior.")
    warm_start_mass: float = Field(0.997, gt=0, lt=1, description="Posterior mass kept by the warm start.")
    warm_start_pad: float = Field(0.5, ge=0, description="Widen the warm-start interval by this fraction of its "
                                  "width on each side.")


def build_model(cfg: TtvFitConfig, data: list[tm.TransitData], stellar_mass: float) -> tm.SystemModel:
    """The system model: each planet's merged priors, the perturbers (configured or automatic)."""
    defaults = cfg.planet_defaults.merged(DEFAULTS)  # a partial planet_defaults keeps the other defaults
    unknown = sorted(set(cfg.planets) - {d.name for d in data})
    if unknown:
        raise ValueError(f"ttvFit config planets {unknown}: no transit times for them; have "
                         f"{[d.name for d in data]}")
    priors, inclinations = [], {}
    for d in data:
        merged = cfg.planets.get(d.name, BodyPriors()).merged(defaults)
        priors += body_priors(d.name, merged, transiting=True, period=d.period, t0=d.t0,
                              coordinates=cfg.eccentricity_coordinates)
        inclinations[d.name] = merged.inclination_deg or cfg.inclination_deg
    perturbers = cfg.perturbers if cfg.perturbers is not None else (
        [PerturberPriors(name="perturber")] if len(data) == 1 else [])
    shortest = min(d.period for d in data)
    for p in perturbers:
        if p.name in {d.name for d in data}:
            raise ValueError(f"ttvFit perturber {p.name!r} has the name of a transiting planet")
        merged = PerturberPriors(name=p.name, **p.merged(defaults).model_dump(exclude_none=True))
        priors += body_priors(p.name, merged, transiting=False, shortest_period=shortest,
                              coordinates=cfg.eccentricity_coordinates)
        inclinations[p.name] = merged.inclination_deg or cfg.inclination_deg
    return tm.SystemModel(tuple(data), tuple(p.name for p in perturbers), tuple(priors), stellar_mass,
                          cfg.inclination_deg, cfg.timestep_fraction, cfg.min_hill_separation, inclinations)


def posterior_columns(model: tm.SystemModel, results) -> dict[str, np.ndarray]:
    cols = model.derived(results.samples)
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


def planet_summary(model: tm.SystemModel, intervals: dict) -> dict:
    """Per body: masses (Earth masses and M/M*), period, phase, eccentricity, e cos w, e sin w, omega."""
    out = {}
    for b in model.bodies:
        phase = "mean_longitude" if b in model.perturbers else "t0"
        out[b] = {"transiting": b not in model.perturbers} | {
            key: intervals[f"{b}:{col}"] for key, col in (
                ("mass_earth", "mass"), ("mass_ratio", "mass_ratio"), ("period_days", "period"), (phase, phase),
                ("eccentricity", "eccentricity"), ("ecosw", "ecosw"), ("esinw", "esinw"), ("omega_deg", "omega"))}
    return out


def disagreement_warning(agreement: dict) -> str:
    """One line: how the independent runs differ and what to do about it."""
    parts = []
    if agreement["log_evidence_spread"] > agreement["log_evidence_tolerance"]:
        parts.append(f"log-evidences spread by {agreement['log_evidence_spread']:.2f} (> "
                     f"{agreement['log_evidence_tolerance']:.2f}, {agreement['sigma']:g} sigma)")
    if agreement["parameters_disagreeing"]:
        parts.append("68 % intervals that do not overlap for " + ", ".join(agreement["parameters_disagreeing"]))
    return (f"the {agreement['n_runs']} nested-sampling runs disagree ({'; '.join(parts)}): the posterior is "
            "multimodal or under-sampled; the merged posterior weights what the runs found by evidence, raise "
            "nlive or n_runs until they agree")


def _one_value(system: str, found: list[tuple[str, float]]) -> float | None:
    values = sorted({m for _, m in found})
    if len(values) > 1:
        raise ValueError(f"ttvFit field {system}: target records give different stellar masses ("
                         + ", ".join(f"{n} {m:g}" for n, m in found) + f" Msun); make them agree (openastro-butler "
                         f"define-targets) or set stellar_masses[{system}]")
    return values[0] if values else None


def stellar_mass_of(cfg: TtvFitConfig, system: str, records: dict | None, planets: list[str]) -> tuple[float, str]:
    """The host's mass (Msun) and where it came from: ``stellar_masses[system]``; else the fitted planets' own
    target records; else the field's transit hosts (those whose name begins a fitted planet's, K2-24 for
    K2-24b, else every one); else a ``stellar_mass`` on the quantum's own records; else ``stellar_mass_msun``.
    Records that disagree are refused rather than one picked."""
    if system in cfg.stellar_masses:
        return float(cfg.stellar_masses[system]), f"config stellar_masses[{system}]"
    records = records or {}
    targets = [r for r in records.get("target") or [] if isinstance(r, dict) and r.get("stellar_mass")]
    if isinstance(records.get("target"), dict):  # a target quantum's own record
        targets = [records["target"]] if records["target"].get("stellar_mass") else []
    own = [(r["name"], float(r["stellar_mass"])) for r in targets if r.get("name") in planets]
    hosts = [r for r in targets if r.get("kind") == "transit_host" and r.get("name") not in planets]
    named = [r for r in hosts if any(p.startswith(str(r.get("name"))) for p in planets)] or hosts
    for found in (own, [(r["name"], float(r["stellar_mass"])) for r in named]):
        mass = _one_value(system, found)
        if mass is not None:
            return mass, f"target record {', '.join(sorted(n for n, _ in found))} stellar_mass"
    for dim, rec in records.items():
        for key in ("stellar_mass", "stellar_mass_msun"):
            if isinstance(rec, dict) and rec.get(key):
                return float(rec[key]), f"{dim} record {key}"
    return cfg.stellar_mass_msun, "config stellar_mass_msun"


class TtvFitConnections(Connections):
    transit_times = Input("transitTimes", ("target",), "Table", multiple=True,
                          doc="Mid-transit times and linear ephemeris of every planet of the field.")
    posterior = Output("ttvPosterior", ("field",), "Table", doc="Nested-sampling samples with weights.")
    summary = Output("ttvSummary", ("field",), "StructuredData",
                     doc="Masses, periods, eccentricities with intervals, evidences, step check, sampler.")
    corner = Output("ttvCorner", ("field",), "Plot", doc="Corner plot of the free parameters.")
    oc = Output("ttvOC", ("field",), "Plot", doc="O-C of every transiting planet with posterior draws.")


class TtvFitTask(PipelineTask):
    """Joint nested sampling of the masses and orbits of a system's planets from their transit times."""

    dimensions = ("field",)
    related_records = ("target",)  # the field's targets: the host's stellar_mass (stellar_mass_of)
    Config = TtvFitConfig
    Connections = TtvFitConnections
    resources = Resources(cores=2, memory_mb=2048, walltime_min=240.0, resource_class="mcmc")

    @classmethod
    def resources_for(cls, config: TtvFitConfig) -> Resources:
        """The hint with the configured pool size (unset: the class's 2; SLURM's mcmc executor gives more)."""
        return cls.resources.model_copy(update={"cores": config.n_cores or cls.resources.cores})

    def _planets(self, tables, names, system: str) -> list[tm.TransitData]:
        cfg: TtvFitConfig = self.config  # type: ignore[assignment]
        data, skipped = [], []
        for table, name in zip(tables, names, strict=True):
            if cfg.targets is not None and name not in cfg.targets:
                continue
            n_good = int(np.sum(np.isfinite(np.asarray(table["t_obs"], float)))) if "t_obs" in table.colnames else 0
            if "t_obs" in table.colnames and n_good < cfg.min_transits:
                skipped.append(f"{name} ({n_good})")
                continue
            data.append(tm.TransitData.from_table(table, name=name, jitter_days=cfg.jitter_minutes / 1440.0,
                                                  where=f"transitTimes for target {name}",
                                                  min_transits=cfg.min_transits))
        if skipped:
            self.log.info("%s: too few transit times (min_transits=%d): %s", system, cfg.min_transits,
                          ", ".join(skipped))
        if not data:
            raise NoWorkFound(f"field {system}: no target with min_transits={cfg.min_transits} transit times")
        return data

    def run(self, transit_times, checkpoint_dir=None, records=None, data_id=None, data_ids=None):
        cfg: TtvFitConfig = self.config  # type: ignore[assignment]
        tables = transit_times if isinstance(transit_times, (list, tuple)) else [transit_times]
        system = (data_id or {}).get("field") or (data_id or {}).get("target") or "?"
        ids = (data_ids or {}).get("transit_times") or [{} for _ in tables]
        names = [i.get("target") or t.meta.get("target") or t.meta.get("planet") or f"planet{k + 1}"
                 for k, (i, t) in enumerate(zip(ids, tables, strict=True))]
        data = self._planets(tables, names, system)
        stellar_mass, mass_source = stellar_mass_of(cfg, system, records, [d.name for d in data])
        model = build_model(cfg, data, stellar_mass)
        warm = None
        if cfg.warm_start:
            prev, w = load_posterior(cfg.warm_start)
            priors, changed = narrow_priors(model.priors, prev, w, cfg.warm_start_mass, cfg.warm_start_pad)
            model = tm.SystemModel(model.data, model.perturbers, priors, stellar_mass, cfg.inclination_deg,
                                   cfg.timestep_fraction, cfg.min_hill_separation, model.inclinations)
            warm = {"path": cfg.warm_start, "narrowed": changed}
        cores = cfg.n_cores or available_cores()
        nlive = cfg.nlive or max(NLIVE_MIN, NLIVE_PER_DIMENSION * model.ndim)
        sampler_args = dict(nlive=nlive, n_runs=cfg.n_runs, dlogz=cfg.dlogz, sample=cfg.sample, bound=cfg.bound, cores=cores,
                            seed=cfg.seed, maxcall=cfg.maxcall, checkpoint_every=cfg.checkpoint_every_s,
                            progress_every=cfg.progress_every_s, log=self.log)
        self.log.info("%s: %s, %d free parameters, %d run(s) of nlive %d, %d core(s)", system,
                      ", ".join(f"{d.name} ({d.n} transits)" for d in data) +
                      (f" + perturbers {', '.join(model.perturbers)}" if model.perturbers else ""),
                      model.ndim, cfg.n_runs, nlive, cores)
        ckpt = Path(checkpoint_dir) if checkpoint_dir else None
        results, info = sample_posterior(model, checkpoint_file=ckpt / CHECKPOINT_NAME if ckpt else None,
                                         **sampler_args)
        agreement = run_agreement(model.free, info.pop("run_results"))
        cols = posterior_columns(model, results)
        names_out = [n for n in cols if n not in ("logl", "weight")]
        intervals = credible_intervals(cols, names_out)
        i_ml = int(np.argmax(cols["logl"]))
        ml = {n: float(cols[n][i_ml]) for n in names_out} | {"logl": float(cols["logl"][i_ml])}
        ml["chi2"] = float(-2 * (ml["logl"] - model._norm))
        step = model.step_check(results.samples[i_ml])
        warnings = []
        if not step["max_shift_sigma"] < cfg.step_check_sigma:
            warnings.append(f"halving the TTVFast step ({step['timestep_days']:.4g} d) moves the best-fit model "
                            f"times by {step['max_shift_sigma']:.3g} sigma (>= {cfg.step_check_sigma}); lower "
                            "timestep_fraction")
        if not agreement["agree"]:
            warnings.append(disagreement_warning(agreement))
        if mass_source == "config stellar_mass_msun" and "stellar_mass_msun" not in cfg.model_fields_set:
            warnings.append(f"stellar mass {stellar_mass} Msun is the default; set stellar_masses[{system}]")
        for w in warnings:
            self.log.warning("%s: %s", system, w)
        logz, logz_err = float(results.logz[-1]) + model.log_evidence_offset, float(results.logzerr[-1])
        comparison = None
        if model.perturbers and cfg.compare_without_perturbers:
            null_model = model.without_perturbers()
            null_res, null_info = sample_posterior(
                null_model, checkpoint_file=ckpt / CHECKPOINT_NULL if ckpt else None, **sampler_args)
            null_info.pop("run_results")
            null_z = float(null_res.logz[-1]) + null_model.log_evidence_offset
            null_err = float(null_res.logzerr[-1])
            comparison = {"with_perturbers": {"log_evidence": logz, "log_evidence_err": logz_err,
                                              "n_likelihood_calls": info["ncall"]},
                          "without_perturbers": {"log_evidence": null_z, "log_evidence_err": null_err,
                                                 "n_likelihood_calls": null_info["ncall"],
                                                 "wall_time_s": null_info["wall_time_s"]},
                          "ln_bayes_factor": logz - null_z,
                          "ln_bayes_factor_err": float(np.hypot(logz_err, null_err))}
        self.log.info("%s: ln Z %.2f ± %.2f; %d calls in %.1f s", system, logz, logz_err, info["ncall"],
                      info["wall_time_s"])

        from astropy.table import Table

        table = Table({n: cols[n] for n in names_out + ["logl", "weight"]})
        units = {n: model.prior(n).unit if n in {p.name for p in model.priors} else "" for n in names_out}
        model_info = model.describe() | {"stellar_mass_source": mass_source,
                                         "ephemerides_in": {d.name: {"t0": d.t0, "period": d.period}
                                                            for d in data},
                                         "time_system": tables[0].meta.get("time_system")}
        table.meta.update(jsonable({"system": system, "log_evidence": logz, "log_evidence_err": logz_err,
                                    "free_parameters": list(model.free), "units": units, "model": model_info}))
        summary = {
            "system": system, "planets": planet_summary(model, intervals),
            "n_transits": {d.name: d.n for d in data}, "epochs": {d.name: d.epochs.tolist() for d in data},
            "stellar_mass_msun": stellar_mass, "free_parameters": list(model.free),
            "priors": {p.name: p.describe() for p in model.priors}, "warm_start": warm,
            "log_evidence": logz, "log_evidence_err": logz_err, "n_likelihood_calls": info["ncall"],
            "evidence_comparison": comparison, "timestep_check": step, "run_agreement": agreement,
            "warnings": warnings,
            "credible_intervals": intervals, "max_likelihood": ml, "units": units, "model": model_info,
            "sampler": {"method": "dynesty static nested sampling" + (f", {cfg.n_runs} runs merged by evidence "
                                                                       "(merge_runs)" if cfg.n_runs > 1 else ""),
                        "nlive": nlive, "dlogz": cfg.dlogz,
                        "sample": cfg.sample, "bound": cfg.bound,
                        "eccentricity_coordinates": cfg.eccentricity_coordinates, "seed": cfg.seed, "maxcall": cfg.maxcall,
                        "niter": int(results.niter), "n_samples": len(table),
                        "efficiency_percent": float(results.eff),
                        "n_effective": float(1.0 / np.sum(cols["weight"] ** 2))} | info,
        }
        title = f"{system}: " + ", ".join(f"{d.name} ({d.n})" for d in data)
        rng = np.random.default_rng(cfg.seed)
        pick = rng.choice(len(table), size=min(cfg.n_oc_draws, len(table)), p=cols["weight"] / cols["weight"].sum())
        draws = [{n: float(cols[n][i]) for n in names_out} for i in pick]
        return {"posterior": table, "summary": jsonable(summary),
                "corner": corner_figure(model, results, cols, ml, title=title),
                "oc": oc_figure(model, draws, ml, title=system)}
