"""Planning speed at scale, on a pipeline shaped like the LSST coadd step.

skyCorr (per visit) -> makeWarp (per visit x overlapping patch, 9 per visit) -> assembleCoadd (per patch x
band) -> detection (per patch x band); 16 visits per band per 6x6-patch tract. The universe is extended (in
YAML, no code) with visit, tract, patch and a visit_patch overlap dimension whose records say which patches
a visit covers. The tasks are the toy ones in ``openastro_parsl.testing.toy_tasks``, shared with the tests.

    python benchmarks/plan_scaling.py --quanta 100000 [--done-fraction 0.5] [--keep DIR]
    python benchmarks/plan_scaling.py --quanta 10000 --lsst   # side by side with the Rubin middleware
    python benchmarks/plan_scaling.py --quanta 10000 --lsst --repeat 3 --baseline /tmp/old  # and an older checkout

Last line: quanta=N plan_s=X save_s=Y peak_mb=Z cpu_s=C (planning runs in a fresh process so the peak is its own;
C is the CPU time of plan + save, which the machine's load moves far less than the wall times).
With ``--lsst`` the harness of ``../shared/bench/lsst_qg`` (its venv: ``$LSST_QG_PYTHON``, default ``.venv`` beside
it) builds and saves the same-shaped graph at the same size between two runs of ours (the machine's load moves
both), and the last line is the ratio of the costs per quantum, lsst (build + save) / ours (plan + save), in wall
time and in CPU time (which the load moves less). The LSST build runs the harness's own ``build()`` on a repository
its ``make-repo`` made (once; ``--repeat N`` runs N such rounds on it and ends with the median ratios).
``--baseline DIR`` (a tree holding another version's ``openastro_parsl``, e.g. ``git archive``d) plans and saves
beside ours in every round (its ratios printed as ``ratio_baseline_*``), so a change is measured before and after
under the same load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import statistics
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
    c0 = time.process_time()
    t0 = time.perf_counter()
    planner = Planner(butler, load_pipeline(root / "pipeline.yaml"), inputs=["calexps"], output_run="u/bench/run",
                      skip_existing_in=["u/bench/run"] if skip else [])
    graph = planner.plan()
    plan_s = time.perf_counter() - t0
    c1 = time.process_time()
    t0 = time.perf_counter()
    graph.save(root / "bench.qgraph")
    save_s = time.perf_counter() - t0
    cpu_s = time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"per task: {graph.counts_by_task()}; skipped as done: "
          f"{sum(r.skipped_existing for r in planner.reports.values())}; "
          f"file {((root / 'bench.qgraph').stat().st_size) / 1e6:.1f} MB")
    print(f"CPU: plan {c1 - c0:.3f} s, save {cpu_s - (c1 - c0):.3f} s; load average {os.getloadavg()[0]:.1f}")
    print(f"quanta={len(graph)} plan_s={plan_s:.3f} save_s={save_s:.3f} peak_mb={peak:.0f} cpu_s={cpu_s:.3f}")


LSST_HARNESS = Path(__file__).resolve().parents[2] / "shared" / "bench" / "lsst_qg"


def run_ours(root: Path, skip: bool, code: Path | None = None) -> dict[str, float]:
    """Plan + save in a fresh process; ``code``: a tree whose ``openastro_parsl`` to import instead of ours."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")])) if code else None
    out = subprocess.run([sys.executable, __file__, "--plan-only", str(root)] + (["--skip"] if skip else []),
                         check=True, capture_output=True, text=True, env=env).stdout
    print(("baseline: " if code else "") + out.strip().splitlines()[-1])
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", out.strip().splitlines()[-1])}


# Run by the LSST venv's Python: the harness's own build(), with the CPU time of this process around it (the
# butler's opening, which build() also does before its clock starts, is timed apart and taken off).
_LSST_DRIVER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import run as harness
from lsst.daf.butler import Butler
from lsst.pipe.base.all_dimensions_quantum_graph_builder import AllDimensionsQuantumGraphBuilder  # noqa: F401
c0 = time.process_time()
Butler.from_config(sys.argv[2], collections=[harness.INPUT_CHAIN], writeable=False).close()
c1 = time.process_time()
res = harness.build(sys.argv[2], sys.argv[3], True, False)
res["cpu_s"] = time.process_time() - c1 - (c1 - c0)
print(json.dumps(res))
"""


def lsst_python() -> str:
    python = os.environ.get("LSST_QG_PYTHON", str(LSST_HARNESS / ".venv" / "bin" / "python"))
    if not Path(python).exists():
        sys.exit(f"no LSST venv at {python}: make one from {LSST_HARNESS}/requirements.txt or set LSST_QG_PYTHON")
    return python


def make_lsst_repo(quanta: int, root: Path) -> Path:
    """The harness's repository for about ``quanta`` quanta (its 1,392 quanta per tract in 6 bands)."""
    repo = root / "lsst_repo"
    subprocess.run([lsst_python(), str(LSST_HARNESS / "run.py"), "make-repo", str(repo), "--tracts",
                    str(max(1, round(quanta / 1392)))], check=True, capture_output=True, text=True)
    return repo


def run_lsst(repo: Path, root: Path) -> dict[str, float]:
    """The Rubin middleware's build + save of the same pipeline shape on the harness's repository."""
    python = lsst_python()
    out = subprocess.run([python, "-c", _LSST_DRIVER, str(LSST_HARNESS), str(repo), str(root / "lsst.qg")],
                         check=True, capture_output=True, text=True, cwd=LSST_HARNESS).stdout
    res = json.loads(out.strip().splitlines()[-1])
    print(f"lsst: quanta={res['n_quanta']} build_s={res['build_s']:.2f} save_s={res['save_s']:.2f} "
          f"cpu_s={res['cpu_s']:.2f} file {res['file_bytes'] / 1e6:.1f} MB")
    return {"quanta": res["n_quanta"], "cost": res["build_s"] + res["save_s"], "cpu": res["cpu_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quanta", type=int, default=10000)
    ap.add_argument("--done-fraction", type=float, default=0.0)
    ap.add_argument("--keep", type=Path, help="Build in this directory and keep it (else a temporary one, removed).")
    ap.add_argument("--lsst", action="store_true", help="Also time the Rubin middleware's harness at this size.")
    ap.add_argument("--repeat", type=int, default=1, help="With --lsst: rounds of ours, LSST, ours (median ratios).")
    ap.add_argument("--baseline", type=Path, help="With --lsst: a tree with another version's openastro_parsl, "
                                                  "run beside ours in every round.")
    ap.add_argument("--plan-only", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--skip", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline:
        args.baseline = args.baseline.resolve()
    if args.plan_only:
        plan_only(args.plan_only, args.skip)
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="plan-bench-"))
    try:
        bench(args, root)
    finally:
        if not args.keep:  # the registries (ours and the LSST harness's) go with it
            shutil.rmtree(root, ignore_errors=True)


def bench(args: argparse.Namespace, root: Path) -> None:
    """Our plan in a registry built for it; with --lsst, the rounds beside the harness (and a baseline)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipeline.yaml").write_text(PIPELINE)
    t0 = time.perf_counter()
    build(root, args.quanta, args.done_fraction)
    print(f"built registry in {time.perf_counter() - t0:.1f} s at {root}")
    ours = run_ours(root, bool(args.done_fraction))
    if not args.lsst:
        return
    skip = bool(args.done_fraction)
    repo = make_lsst_repo(args.quanta, root)
    rounds: dict[str, list[float]] = {}
    for r in range(args.repeat):
        if r:
            ours = run_ours(root, skip)
        before = [run_ours(root, skip, args.baseline)] if args.baseline else []
        lsst = run_lsst(repo, root)
        again = run_ours(root, skip)
        if args.baseline:
            before.append(run_ours(root, skip, args.baseline))
        load = os.getloadavg()[0]
        lsst_wall, lsst_cpu = lsst["cost"] / lsst["quanta"] * 1e3, lsst["cpu"] / lsst["quanta"] * 1e3
        line = f"round {r + 1}, load average {load:.1f}: lsst ms a quantum wall {lsst_wall:.3f} cpu {lsst_cpu:.3f}"
        for name, runs in [("ours", [ours, again])] + ([("baseline", before)] if before else []):
            wall = statistics.mean([(x["plan_s"] + x["save_s"]) / x["quanta"] for x in runs]) * 1e3
            cpu = statistics.mean([x["cpu_s"] / x["quanta"] for x in runs]) * 1e3
            rounds.setdefault(f"{name}_wall", []).append(lsst_wall / wall)
            rounds.setdefault(f"{name}_cpu", []).append(lsst_cpu / cpu)
            line += (f"; {name} (mean of two) wall {wall:.4f} cpu {cpu:.4f}: ratio wall {lsst_wall / wall:.1f} "
                     f"cpu {lsst_cpu / cpu:.1f}")
        print(line)
    if args.repeat > 1:
        print("ratios by round: " + "; ".join(f"{k} {', '.join(f'{v:.1f}' for v in vs)}" for k, vs in rounds.items()))
    print(" ".join(f"ratio_{k.replace('ours_', '')}={statistics.median(vs):.1f}" for k, vs in rounds.items()))


if __name__ == "__main__":
    main()
