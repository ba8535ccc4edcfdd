"""Transient branch kernels: difference imaging per frame, real/bogus inference throughput, held-out metrics.

    python benchmarks/realbogus.py                 # 20 simulated frames, 4096 stamps, CPU (and GPU if present)
    python benchmarks/realbogus.py --frames 5      # quick

Difference imaging runs on simulated science/template pairs (openastro_parsl.tasks.transient.training), so
seconds per frame include template resampling, PSF fits, the kernel fit, detection and cutouts. Inference is
timed for several batch sizes on the shipped weights; the held-out metrics are those recorded with them.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--stamps", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)

    import torch

    from openastro_parsl.tasks.transient import realbogus as rb
    from openastro_parsl.tasks.transient.diffim import difference_image
    from openastro_parsl.tasks.transient.training import simulate_pair

    torch.set_num_threads(a.threads)
    times, ncand = [], 0
    for i in range(a.frames):
        pair = simulate_pair(np.random.default_rng(np.random.SeedSequence([77, i])))
        t0 = time.perf_counter()
        _, cands, cutouts, _ = difference_image(pair.science, pair.template, saturation=pair.info["saturation"])
        times.append(time.perf_counter() - t0)
        ncand += len(cands)
    print(f"diffim: {a.frames} frames ({pair.science.shape[0]}-ish px), median {np.median(times):.2f} s/frame, "
          f"max {max(times):.2f} s, {ncand / a.frames:.1f} candidates/frame")

    model, meta = rb.load_weights()
    x = np.random.default_rng(0).normal(0, 1, (a.stamps, 3, rb.STAMP_SIZE, rb.STAMP_SIZE)).astype(np.float32)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        for bs in (1, 64, 512):
            n = min(a.stamps, 256) if bs == 1 else a.stamps
            rb.predict(model, x[:bs], batch_size=bs, device=dev)
            t0 = time.perf_counter()
            rb.predict(model, x[:n], batch_size=bs, device=dev)
            dt = time.perf_counter() - t0
            print(f"inference {dev} batch {bs:4d}: {n / dt:8.0f} stamps/s")
    m = meta.get("heldout_metrics", {})
    print(f"weights {rb.DEFAULT_WEIGHTS.name} v{meta.get('version')}: {meta.get('n_params')} parameters, "
          f"{rb.DEFAULT_WEIGHTS.stat().st_size / 1024:.0f} KiB, trained {meta.get('training_seconds', 0):.0f} s")
    if m:
        print(f"held-out ({m['n']} candidates): AUC {m['auc']:.4f}; at 0.5 FNR {m['at_0.5']['fnr']:.4f} "
              f"FPR {m['at_0.5']['fpr']:.4f} precision {m['at_0.5']['precision']:.4f} recall "
              f"{m['at_0.5']['recall']:.4f}; at 0.8 precision {m['at_0.8']['precision']:.4f} recall "
              f"{m['at_0.8']['recall']:.4f}")
    print(json.dumps({"diffim_s_per_frame": float(np.median(times)), "heldout": m and {
        k: m[k] for k in ("auc", "at_0.5", "at_0.8")}}, default=float))


if __name__ == "__main__":
    main()
