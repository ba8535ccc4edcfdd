"""Nested sampling of a ``SystemModel`` with dynesty: a process pool, checkpoints, resume, warm starts.

Static nested sampling (multimodal period aliases are why nested sampling and not MCMC). Likelihood calls
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
from pathlib import Path
from typing import Any

import numpy as np

from ...pipeline.moved import old_module_names
from . import ttv_model as tm
from .ttv_priors import Prior


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


def sample_posterior(model: tm.SystemModel, *, nlive: int = 250, dlogz: float = 0.5, sample: str = "rwalk",
                     bound: str = "multi", cores: int = 1, seed: int = 42, maxcall: int | None = None,
                     checkpoint_file: str | Path | None = None, checkpoint_every: float = 60.0,
                     progress_every: float = 30.0, log=None):
    """Run (or resume) static nested sampling; returns (dynesty Results, info dict).

    With a checkpoint file, the sampler state is saved every ``checkpoint_every`` seconds and at the end; a
    later call with the same model and settings resumes from it (``info['resumed']``, ``info['ncall_at_resume']``).
    """
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
        old = json.loads(fp_path.read_text()).get("fingerprint") if fp_path and fp_path.exists() else None
        if old == fp:
            resume = True
        else:
            log.warning("checkpoint %s is for other data or settings; starting afresh", ckpt)
            ckpt.unlink()
    tm.activate(model)
    pool_ctx = mp.get_context("spawn").Pool(cores, tm.activate, (model,)) if cores > 1 else nullcontext(None)
    t0 = time.time()
    info: dict[str, Any] = {"resumed": False, "ncall_at_resume": 0, "iterations_at_resume": 0, "cores": cores,
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
                sample=sample, periodic=model.periodic or None, pool=pool,
                queue_size=cores if pool is not None else None, rstate=np.random.default_rng(seed))
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
        results = sampler.results
        info["ncall"] = int(sampler.ncall)
    info["wall_time_s"] = time.time() - t0
    info["calls_per_s"] = info["ncall"] / max(info["wall_time_s"], 1e-9)
    return results, info


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
        out.append(Prior(p.name, new_lo, new_hi, p.kind, p.periodic, p.scale, p.unit))
        changed[p.name] = [[p.lo, p.hi], [new_lo, new_hi]]
    return tuple(out), changed
