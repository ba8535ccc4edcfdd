"""Command line that makes the shipped weights (``tasks/transient/data/realbogus_v1.pt``):
``python -m openastro_parsl.tasks.transient.training --out openastro_parsl/tasks/transient/data/realbogus_v1.pt``."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import realbogus as rb
from .dataset import build_training_set
from .metrics import evaluate, format_metrics, per_kind
from .train import train_model

__all__ = ["main"]


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description="Train the shipped real/bogus CNN on simulated frames.")
    p.add_argument("--out", type=Path, default=rb.DEFAULT_WEIGHTS)
    p.add_argument("--train-seed", type=int, default=1)
    p.add_argument("--train-frames", type=int, default=700)
    p.add_argument("--heldout-seed", type=int, default=rb.HELDOUT_SEED)
    p.add_argument("--heldout-frames", type=int, default=250)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--version", default="1")
    p.add_argument("--cache", type=Path, default=None, help="NPZ cache of the simulated sets")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    if a.cache and a.cache.exists():
        z = dict(np.load(a.cache))
        tr = {k[3:]: v for k, v in z.items() if k.startswith("tr_")}
        ho = {k[3:]: v for k, v in z.items() if k.startswith("ho_")}
    else:
        tr = build_training_set(a.train_seed, a.train_frames, log=print)
        ho = build_training_set(a.heldout_seed, a.heldout_frames, log=print)
        if a.cache:
            np.savez(a.cache, **{f"tr_{k}": v for k, v in tr.items()}, **{f"ho_{k}": v for k, v in ho.items()})
    t_sim = time.perf_counter() - t0
    print(f"training set {len(tr['label'])} ({tr['label'].mean():.3f} real), held-out {len(ho['label'])}; "
          f"simulated in {t_sim:.0f} s")
    t1 = time.perf_counter()
    model, history = train_model(tr, seed=a.train_seed, epochs=a.epochs, threads=a.threads)
    t_train = time.perf_counter() - t1
    scores = rb.predict(model, ho["stamps"].astype(np.float32))
    m = evaluate(ho["label"], scores)
    m["per_kind"] = per_kind(ho["kind"], scores)
    print(format_metrics(m))
    meta = rb.model_meta(model, version=a.version, seed=a.train_seed, training_seconds=t_train,
                         n_train=int(len(tr["label"])), history=history)
    meta.update({"train_frames": a.train_frames, "train_seed": a.train_seed, "heldout_seed": a.heldout_seed,
                 "heldout_frames": a.heldout_frames, "simulation_seconds": t_sim, "heldout_metrics": m})
    rb.save_weights(model, a.out, meta)
    print(f"wrote {a.out} ({a.out.stat().st_size / 1024:.0f} KiB), {meta['n_params']} parameters, "
          f"trained in {t_train:.0f} s")
