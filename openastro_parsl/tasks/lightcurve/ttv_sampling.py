"""Nested sampling of a ``SystemModel`` with dynesty: several runs merged, a process pool, checkpoints, resume,
warm starts.

Static nested sampling (multimodal period aliases are why nested sampling and not MCMC). One run can settle in
one mode of a multimodal posterior (a mass-eccentricity degeneracy); independent runs merged with
``dynesty.utils.merge_runs`` keep every mode any run found, and ``run_agreement`` says when they differ. Likelihood calls
are spread over a ``spawn`` pool whose workers each hold the model (``ttv_model.activate``), so only
parameter vectors cross process boundaries. A checkpoint is resumed only when its fingerprint (data, priors,
model and sampler settings, dynesty version) matches; any other is discarded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ...pipeline.moved import old_module_names
from . import ttv_model as tm


def available_cores() -> int:
    """Cores this worker may use: its CPU affinity, shared among the Parsl workers of its node when Parsl
    says how many there are (on SLURM the ``mcmc`` executor's cores_per_worker sets that count)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    workers = int(os.environ.get("PARSL_WORKER_COUNT", "1") or 1)
    return max(1, n // max(1, workers))


def fingerprint(model: tm.SystemModel, sampler_settings: dict) -> str:
    """What a checkpoint must match to be resumed: the data, the priors, the model and sampler settings."""
    import dynesty

    h = hashlib.sha256()
    for d in model.data:
        h.update(d.name.encode())
        for a in (d.epochs, d.times, d.errors):
            h.update(np.ascontiguousarray(a, dtype=float).tobytes())
    h.update(json.dumps({"priors": [p.describe() | {"name": p.name} for p in model.priors],
                         "model": model.describe() | {"min_hill": model.min_hill_separation},
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


def run_seed(seed: int, k: int) -> np.random.Generator:
    """Random stream of run ``k``: run 0 is ``default_rng(seed)`` (a one-run fit is unchanged); the others are
    independent children of the seed (``SeedSequence`` spawn keys), not seed + k, which could meet another
    fit's seed."""
    return np.random.default_rng(seed if k == 0 else np.random.SeedSequence(seed, spawn_key=(k,)))


def run_checkpoint(checkpoint_file: Path | None, k: int) -> Path | None:
    """Checkpoint of run ``k``: the configured file for run 0, ``<stem>_run<k+1><suffix>`` beside it for the others."""
    if checkpoint_file is None or k == 0:
        return checkpoint_file
    return checkpoint_file.with_name(f"{checkpoint_file.stem}_run{k + 1}{checkpoint_file.suffix}")


def sample_posterior(model: tm.SystemModel, *, nlive: int = 250, dlogz: float = 0.5, sample: str = "rwalk",
                     bound: str = "multi", cores: int = 1, seed: int = 42, maxcall: int | None = None,
                     n_runs: int = 1, checkpoint_file: str | Path | None = None, checkpoint_every: float = 60.0,
                     progress_every: float = 30.0, log=None):
    """``n_runs`` independent static nested-sampling runs, each run (or resumed) in turn over one pool, merged
    into one with ``dynesty.utils.merge_runs``; returns (Results, info).

    Merging is what a single run with the summed live points would have done: at every likelihood level the
    runs' live points are pooled, so modes found by any run are kept and weighted by their evidence. Each run
    has its own checkpoint (``run_checkpoint``): an interrupted fit keeps its finished runs and resumes the
    interrupted one. ``info['runs']`` holds each run's own evidence and calls (``run_agreement`` compares them).
    """
    from dynesty.utils import merge_runs

    log = log or logging.getLogger(__name__)
    if not model.free:
        raise ValueError("every TTV parameter is fixed (all prior ranges have equal bounds); nothing to sample")
    ckpt = Path(checkpoint_file) if checkpoint_file else None
    tm.activate(model)
    pool_ctx = mp.get_context("spawn").Pool(cores, tm.activate, (model,)) if cores > 1 else nullcontext(None)
    t0 = time.time()
    runs, infos = [], []
    with pool_ctx as pool:
        for k in range(n_runs):
            res, one = _one_run(model, pool, k, nlive=nlive, dlogz=dlogz, sample=sample, bound=bound, cores=cores,
                                seed=seed, maxcall=maxcall, ckpt=run_checkpoint(ckpt, k),
                                checkpoint_every=checkpoint_every, progress_every=progress_every, log=log)
            if n_runs > 1:
                log.info("run %d/%d: ln Z %.2f ± %.2f, %d calls", k + 1, n_runs,
                         res.logz[-1] + model.log_evidence_offset, res.logzerr[-1], one["ncall"])
            runs.append(res)
            infos.append(one)
    results = runs[0] if n_runs == 1 else merge_runs(runs, print_progress=False)
    info: dict[str, Any] = {
        "resumed": any(i["resumed"] for i in infos), "ncall_at_resume": sum(i["ncall_at_resume"] for i in infos),
        "iterations_at_resume": sum(i["iterations_at_resume"] for i in infos), "cores": cores,
        "checkpoint": str(ckpt) if ckpt else None, "ncall": sum(i["ncall"] for i in infos), "n_runs": n_runs,
        "runs": [{"seed": seed, "run": k, "log_evidence": float(r.logz[-1]) + model.log_evidence_offset,
                  "log_evidence_err": float(r.logzerr[-1]),
                  "ncall": i["ncall"], "n_samples": len(r.samples), "resumed": i["resumed"]}
                 for k, (r, i) in enumerate(zip(runs, infos, strict=True))]}
    info["wall_time_s"] = time.time() - t0
    info["calls_per_s"] = info["ncall"] / max(info["wall_time_s"], 1e-9)
    info["run_results"] = runs
    return results, info


def _one_run(model: tm.SystemModel, pool, k: int, *, nlive: int, dlogz: float, sample: str, bound: str, cores: int,
             seed: int, maxcall: int | None, ckpt: Path | None, checkpoint_every: float, progress_every: float, log):
    """Run (or resume) run ``k``. With a checkpoint file, the sampler state is saved every ``checkpoint_every``
    seconds and at the end; a later call with the same model and settings resumes from it."""
    import dynesty

    settings: dict[str, Any] = {"nlive": nlive, "sample": sample, "bound": bound, "seed": seed}
    if k:
        settings["run"] = k
    fp_path = ckpt.with_suffix(".json") if ckpt else None
    fp = fingerprint(model, settings)
    resume = False
    if ckpt and ckpt.exists():
        old = json.loads(fp_path.read_text()).get("fingerprint") if fp_path and fp_path.exists() else None
        if old == fp:
            resume = True
        else:
            log.warning("checkpoint %s is for other data or settings; starting afresh", ckpt)
            ckpt.unlink()
    info: dict[str, Any] = {"resumed": False, "ncall_at_resume": 0, "iterations_at_resume": 0}
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
            sample=sample, periodic=model.periodic or None, pool=pool,
            queue_size=cores if pool is not None else None, rstate=run_seed(seed, k))
        if ckpt and fp_path:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            fp_path.write_text(json.dumps({"fingerprint": fp, "settings": settings}))
    if resume and sampler.added_live:
        log.info("checkpoint %s holds a finished run; using it as is", ckpt)
    else:
        sampler.run_nested(dlogz=dlogz, maxcall=maxcall, print_progress=True,
                           print_func=_ProgressLog(log, progress_every),
                           checkpoint_file=str(ckpt) if ckpt else None, checkpoint_every=checkpoint_every,
                           resume=resume)
    info["ncall"] = int(sampler.ncall)
    return sampler.results, info


def run_agreement(names, runs, *, sigma: float = 3.0) -> dict:
    """Do independent runs describe the same posterior? Their log-evidences must agree within ``sigma``
    combined errors, and every free parameter's (``names``, the samples' columns) central 68 % interval of each run must overlap every other
    run's. Runs that settle in different modes of a multimodal posterior fail the second test: the merged
    posterior then rests on how many live points each mode got, and more runs or live points are needed
    before its intervals can be trusted."""
    from dynesty.utils import quantile

    out: dict[str, Any] = {"n_runs": len(runs), "sigma": sigma, "agree": True, "log_evidence_spread": 0.0,
                           "log_evidence_tolerance": 0.0, "parameters_disagreeing": []}
    if len(runs) < 2:
        return out
    z = np.array([float(r.logz[-1]) for r in runs])
    ze = np.array([float(r.logzerr[-1]) for r in runs])
    i, j = int(np.argmax(z)), int(np.argmin(z))
    out["log_evidence_spread"] = float(z[i] - z[j])
    out["log_evidence_tolerance"] = float(sigma * np.hypot(ze[i], ze[j]))
    bands = []
    for r in runs:
        w = r.importance_weights()
        bands.append([quantile(r.samples[:, d], [0.16, 0.84], weights=w) for d in range(len(names))])
    for d, name in enumerate(names):
        lo, hi = max(b[d][0] for b in bands), min(b[d][1] for b in bands)
        if lo > hi:
            out["parameters_disagreeing"].append(name)
    out["agree"] = bool(out["log_evidence_spread"] <= out["log_evidence_tolerance"]
                        and not out["parameters_disagreeing"])
    return out


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
    """Shrink each uniform or log-uniform, non-periodic free prior to the previous posterior's central
    interval (padded), inside the configured range. Returns (priors, {name: [old, new]} for those changed)."""
    from dynesty.utils import quantile

    out, changed = [], {}
    q = [(1 - mass) / 2, 1 - (1 - mass) / 2]
    for p in priors:
        x = cols.get(p.name)
        if p.fixed or p.periodic or x is None or p.kind not in ("uniform", "log"):
            out.append(p)
            continue
        fwd, inv = (np.log, np.exp) if p.kind == "log" else (lambda v: v, lambda v: v)
        ok = np.isfinite(x) & (x > 0 if p.kind == "log" else True)
        if ok.sum() < 2:
            out.append(p)
            continue
        lo, hi = quantile(fwd(x[ok]), q, weights=weights[ok])
        width = hi - lo
        new_lo = max(p.lo, float(inv(lo - pad * width)))
        new_hi = min(p.hi, float(inv(hi + pad * width)))
        if width <= 0 or not new_hi > new_lo or (new_lo, new_hi) == (p.lo, p.hi):
            out.append(p)
            continue
        out.append(replace(p, lo=new_lo, hi=new_hi))
        changed[p.name] = [[p.lo, p.hi], [new_lo, new_hi]]
    return tuple(out), changed
