"""Colour terms carried from one field to another, with no truth involved: each field of the medium demo survey
fitted with its own colour terms, then with the other field's (pooled as ``openastro-butler colour-terms`` pools
them and given as ``fieldCalibration``'s ``colour_terms``), both against the simulator's zero-points.

    python benchmarks/zeropoint_fields.py --seeds 42 7 3

One line per seed and field: frames beyond 0.02 mag, max |miss| and mean miss with either set of colour terms.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from zeropoint_limit import calibrate  # this folder: run as a script

RUN = "bench/zeropoint-fields"


def misses(table, truth) -> np.ndarray:
    return np.array([float(r["zp"]) - truth[(str(r["instrument"]), int(r["exposure"]))] for r in table])


def describe(d: np.ndarray) -> str:
    return f"{int(np.sum(np.abs(d) > 0.02))}/{len(d)} beyond, max {np.abs(d).max():.4f}, mean {d.mean():+.4f}"


def main(argv=None) -> int:
    from openastro_parsl.tasks.photometry import FieldCalibrationTask, pool_colour_terms
    from openastro_parsl.testing import run_task

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 3])
    ap.add_argument("--root", type=Path, default=None, help="Where the surveys go (default: a temporary folder).")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zp_fields_") as tmp:
        for seed in args.seeds:
            t0 = time.perf_counter()
            demo = calibrate(args.root or Path(tmp), seed, size="medium", run=RUN)
            butler = demo.butler
            truth = {(e["instrument"], e["exposure"]): e["zero_point"] for e in demo.truth["exposures"]}
            fits = {ref.data_id["field"]: butler.get(ref)
                    for ref in butler.registry.query_datasets("fieldZeropoints", [RUN])}
            src = [(dict(ref.data_id), ref) for ref in butler.registry.query_datasets("src", [RUN])]
            for field, own in sorted(fits.items()):
                pooled, _ = pool_colour_terms(t for f, t in fits.items() if f != field)
                known = {p.key: [p.value, p.error] for p in pooled}
                frames = {(str(r["instrument"]), int(r["exposure"])) for r in own}
                mine = [(d, ref) for d, ref in src if (d["instrument"], int(d["exposure"])) in frames]
                refcat = butler.get("refcat", {"field": field}, collections=demo.truth.get("refcat_run", "refcats"))
                other = run_task(FieldCalibrationTask, config={"colour_terms": known, "colour_terms_index": "g-r"},
                                 src=[butler.get(ref) for _, ref in mine], refcat=refcat,
                                 data_ids={"src": [d for d, _ in mine]}, data_id={"field": field})["zeropoints"]
                print(f"seed={seed} field={field} own: {describe(misses(own, truth))} | other field's: "
                      f"{describe(misses(other, truth))} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
