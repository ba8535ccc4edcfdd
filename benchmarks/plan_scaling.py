"""Planning speed at scale, on a pipeline shaped like the LSST coadd step.

skyCorr (per visit) -> makeWarp (per visit x overlapping patch, 9 per visit) -> assembleCoadd (per patch x
band) -> detection (per patch x band); 16 visits per band per 6x6-patch tract. The universe is extended (in
YAML, no code) with visit, tract, patch and a visit_patch overlap dimension whose records say which patches
a visit covers. The tasks are the toy ones in ``openastro_parsl.testing.toy_tasks``, shared with the tests.

    python benchmarks/plan_scaling.py --quanta 100000 [--done-fraction 0.5] [--keep DIR]

Last line: quanta=N plan_s=X save_s=Y peak_mb=Z (planning runs in a fresh process so the peak is its own).
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UNIVERSE_EXTRA = """
  visit:
    key: {name: id, type: int}
    requires: [instrument]
    implies: [band, tract]
  tract:
    key: {name: id, type: int}
  patch:
    key: {name: id, type: int}
    requires: [tract]
  visit_patch:
    doc: which patches a visit overlaps
    key: {name: id, type: int}
    requires: [instrument, visit, tract, patch]
"""

PIPELINE = """
description: LSST-coadd-shaped benchmark pipeline (planning only)
tasks:
  skyCorr: openastro_parsl.testing.toy_tasks.SkyCorrTask
  makeWarp: openastro_parsl.testing.toy_tasks.MakeWarpTask
  assembleCoadd: openastro_parsl.testing.toy_tasks.AssembleCoaddTask
  detection: openastro_parsl.testing.toy_tasks.DetectionTask
"""

VISITS_PER_BAND, PATCHES_SIDE, OVERLAP = 16, 6, 9
BANDS = ["u", "g", "r", "i", "z", "y"]
PER_TRACT_BAND = VISITS_PER_BAND * (1 + OVERLAP) + 2 * PATCHES_SIDE ** 2  # 232 quanta


def build(root: Path, quanta: int, done_fraction: float) -> None:
    """Registry with the inputs (calexps) and records for about ``quanta`` quanta."""
    from openastro_parsl.butler import Butler
    from openastro_parsl.registry.refs import DatasetType
    from openastro_parsl.registry.universe import DimensionUniverse

    uni = root / "universe.yaml"
    uni.write_text(DimensionUniverse.default().text + UNIVERSE_EXTRA)
    butler = Butler.create(root / "repo", universe=uni)
    reg = butler.registry
    n_tb = max(1, math.ceil(quanta / PER_TRACT_BAND))
    n_tracts = math.ceil(n_tb / len(BANDS))
    reg.sync_dimension_records("instrument", [{"name": "LSSTCam"}])
    reg.sync_dimension_records("band", [{"name": b} for b in BANDS])
    reg.sync_dimension_records("field", [{"name": "wide"}])
    reg.sync_dimension_records("tract", [{"id": t} for t in range(n_tracts)])
    reg.sync_dimension_records("patch", [{"tract": t, "id": p} for t in range(n_tracts) for p in range(PATCHES_SIDE ** 2)])
    visits, overlaps = [], []
    vid = 0
    for k in range(n_tb):
        tract, band = divmod(k, len(BANDS))
        for v in range(VISITS_PER_BAND):
            vid += 1
            visits.append({"instrument": "LSSTCam", "id": vid, "band": BANDS[band], "tract": tract})
            cx, cy = v % (PATCHES_SIDE - 2) + 1, (v // (PATCHES_SIDE - 2)) % (PATCHES_SIDE - 2) + 1
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    overlaps.append({"instrument": "LSSTCam", "visit": vid, "tract": tract,
                                     "patch": (cy + dy) * PATCHES_SIDE + cx + dx, "id": 0})
    with reg.transaction() as c:
        c.execute(reg.schema.dimensions["visit"].insert(), visits)
        c.execute(reg.schema.dimensions["visit_patch"].insert(), overlaps)
    calexp = DatasetType("calexp", ("instrument", "visit"), "Image")
    reg.register_dataset_type(calexp)
    reg.register_run("calexps")
    loc = {"path": "x.fits", "checksum": "0" * 64, "size": 1, "formatter": "fits-image"}
    reg.insert_datasets(calexp, "calexps", [({"instrument": "LSSTCam", "visit": v["id"]},
                                                {**loc, "path": f"calexps/calexp/calexp_{v['id']}.fits"}) for v in visits])
    if done_fraction > 0:  # outputs of a partly finished earlier run
        from openastro_parsl.graph.planner import Planner
        from openastro_parsl.pipeline.pipeline import load_pipeline

        graph = Planner(butler, load_pipeline(root / "pipeline.yaml"), inputs=["calexps"], output_run="u/bench/run").plan()
        reg.register_run("u/bench/run")
        by_type: dict[str, list] = {}
        for i, q in enumerate(graph.quanta.values()):
            if (i * 7919) % 1000 >= done_fraction * 1000:
                continue
            for ids in q.outputs.values():
                for d in ids:
                    n = graph.datasets[d]
                    by_type.setdefault(n.dataset_type, []).append((n.data_id, {**loc, "path": n.path}))
        for name, items in by_type.items():
            dt = graph.dataset_types[name]
            reg.register_dataset_type(DatasetType(name, tuple(dt["dimensions"]), dt["storage_class"]))
            reg.insert_datasets(name, "u/bench/run", items)


def plan_only(root: Path, skip: bool) -> None:
    import openastro_parsl.testing.toy_tasks  # noqa: F401 - imported before the clock: importing is not planning
    from openastro_parsl.butler import Butler
    from openastro_parsl.graph.planner import Planner
    from openastro_parsl.pipeline.pipeline import load_pipeline

    butler = Butler(root / "repo")
    t0 = time.perf_counter()
    planner = Planner(butler, load_pipeline(root / "pipeline.yaml"), inputs=["calexps"], output_run="u/bench/run",
                      skip_existing_in=["u/bench/run"] if skip else [])
    graph = planner.plan()
    plan_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph.save(root / "bench.qgraph")
    save_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"per task: {graph.counts_by_task()}; skipped as done: "
          f"{sum(r.skipped_existing for r in planner.reports.values())}; "
          f"file {((root / 'bench.qgraph').stat().st_size) / 1e6:.1f} MB")
    print(f"quanta={len(graph)} plan_s={plan_s:.2f} save_s={save_s:.2f} peak_mb={peak:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quanta", type=int, default=10000)
    ap.add_argument("--done-fraction", type=float, default=0.0)
    ap.add_argument("--keep", type=Path, help="Build in this directory and keep it.")
    ap.add_argument("--plan-only", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--skip", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plan_only:
        plan_only(args.plan_only, args.skip)
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="plan-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipeline.yaml").write_text(PIPELINE)
    t0 = time.perf_counter()
    build(root, args.quanta, args.done_fraction)
    print(f"built registry in {time.perf_counter() - t0:.1f} s at {root}")
    subprocess.run([sys.executable, __file__, "--plan-only", str(root)] + (["--skip"] if args.done_fraction else []),
                   check=True)


if __name__ == "__main__":
    main()
