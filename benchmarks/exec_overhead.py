"""Execution overhead: N no-op quanta through openastro-submit's loop vs N bare Parsl python_apps.

Both on the same local HighThroughputExecutor. The quanta are a chain of two no-op tasks per exposure (the toy
tasks of ``openastro_parsl.testing.toy_tasks``), each with real registry registration (provenance included),
status-store updates and per-quantum log files; the bare apps do nothing. Throughput is measured from the
first completion to the last (worker start-up is not counted for either).

    python benchmarks/exec_overhead.py --quanta 10000

Last line: quanta=N framework_qps=X parsl_qps=Y ratio=X/Y (and the submit process's peak memory).

``--status-only`` times the run's status store alone (``execution/status.py``) as the submit loop uses it: every
quantum added at the start, then per batch of 200 one "running" and one "succeeded" update per quantum, each
batch one transaction (figures for docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIPELINE = """
description: two no-op tasks per exposure (execution overhead benchmark)
tasks:
  first: openastro_parsl.testing.toy_tasks.NoopFirstTask
  second: openastro_parsl.testing.toy_tasks.NoopSecondTask
"""


def noop(x):
    return x


def framework(root: Path, n: int) -> None:
    """Build the repo, plan, run; print the figures of this process (so its peak RSS is the submit's)."""
    from openastro_parsl.butler import Butler
    from openastro_parsl.execution.site import load_site
    from openastro_parsl.execution.submit import Submission
    from openastro_parsl.graph.planner import Planner
    from openastro_parsl.pipeline.pipeline import load_pipeline
    from openastro_parsl.registry.refs import DatasetType

    butler = Butler.create(root / "repo")
    reg = butler.registry
    n_exp = n // 2
    reg.sync_dimension_records("instrument", [{"name": "bench"}])
    reg.sync_dimension_records("band", [{"name": "r"}])
    reg.sync_dimension_records("field", [{"name": "f"}])
    with reg.transaction() as c:
        c.execute(reg.schema.dimensions["exposure"].insert(),
                  [{"instrument": "bench", "id": i, "band": "r", "field": "f"} for i in range(n_exp)])
    seed = DatasetType("noopSeed", ("instrument", "exposure"), "StructuredData")
    reg.register_dataset_type(seed)
    reg.register_run("seeds")
    # One file per seed: the registry refuses two datasets at one path.
    reg.insert_datasets(seed, "seeds", [({"instrument": "bench", "exposure": i},
                                         butler.datastore.write_at({"x": i}, f"seeds/seed_{i}.json", "json"))
                                        for i in range(n_exp)])
    (root / "p.yaml").write_text(PIPELINE)
    graph = Planner(butler, load_pipeline(root / "p.yaml"), inputs=["seeds"], output_run="u/bench/noop").plan()
    site, src = load_site(None)
    sub = Submission.start(butler, graph, site, src)
    summary = sub.run()
    ended = sorted(r["ended"] for r in sub.status.rows())
    qps = (len(ended) - 1) / (ended[-1] - ended[0])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"ok": summary.ok, "qps": qps, "peak_mb": peak, "n": len(ended),
                      "registered": len(reg.query_datasets("*", "u/bench/noop"))}))


def bare(root: Path, n: int) -> None:
    import parsl
    from parsl import python_app

    from openastro_parsl.execution.site import load_site, parsl_config

    site, _ = load_site(None)
    dfk = parsl.load(parsl_config(site, root / "bare"))
    app = python_app(noop, data_flow_kernel=dfk)
    app(0).result()  # warm-up: workers started
    done: list[float] = []
    futs = [app(i) for i in range(n)]
    for f in futs:
        f.add_done_callback(lambda _f: done.append(time.time()))
    for f in futs:
        f.result()
    dfk.cleanup()
    done.sort()
    print(json.dumps({"qps": (len(done) - 1) / (done[-1] - done[0])}))


def status_rate(root: Path, n: int) -> None:
    """Quanta per second the status store takes: adding them, then the two updates per quantum of the loop."""
    import uuid

    from openastro_parsl.execution.status import StatusStore

    store = StatusStore(root / "status.sqlite3")
    ids = [str(uuid.UUID(int=i)) for i in range(n)]
    t0 = time.perf_counter()
    store.add_quanta((q, "first", {"instrument": "bench", "exposure": i},
                      {k: f"{root}/logs/first/e={i}/{q}.{k}" for k in ("stdout", "stderr", "jsonl")})
                     for i, q in enumerate(ids))
    t1 = time.perf_counter()
    for b in range(0, n, 200):
        now = time.time()
        store.update_rows([(q, {"state": "running", "attempts": 1, "executor": "local", "started": now})
                           for q in ids[b:b + 200]])
        store.update_rows([(q, {"state": "succeeded", "ended": now, "wall": 0.01, "cpu": 0.01, "maxrss_mb": 50.0,
                                "host": "h", "slurm_job_id": None, "error_kind": None, "error_type": None,
                                "message": None}) for q in ids[b:b + 200]])
    t2 = time.perf_counter()
    size = (root / "status.sqlite3").stat().st_size
    print(f"status store: add {n / (t1 - t0):.0f} quanta/s, running+succeeded updates {n / (t2 - t1):.0f} quanta/s, "
          f"{size / n:.0f} bytes per quantum")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quanta", type=int, default=2000)
    ap.add_argument("--part", choices=["framework", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--status-only", action="store_true", help="Time the status store alone.")
    args = ap.parse_args()
    if args.status_only:
        status_rate(Path(tempfile.mkdtemp(prefix="status-bench-")), args.quanta)
        return
    if args.part:
        (framework if args.part == "framework" else bare)(args.root, args.quanta)
        return
    root = Path(tempfile.mkdtemp(prefix="exec-bench-"))
    figures = {}
    for part in ("framework", "bare"):
        out = subprocess.run([sys.executable, __file__, "--part", part, "--root", str(root), "--quanta", str(args.quanta)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{part} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        figures[part] = json.loads(out.stdout.strip().splitlines()[-1])
    fw, pb = figures["framework"], figures["bare"]
    print(f"framework: {fw['n']} quanta, all ok: {fw['ok']}, registered {fw['registered']} datasets, "
          f"submit process peak {fw['peak_mb']:.0f} MB")
    print(f"quanta={args.quanta} framework_qps={fw['qps']:.1f} parsl_qps={pb['qps']:.1f} "
          f"ratio={fw['qps'] / pb['qps']:.2f} submit_peak_mb={fw['peak_mb']:.0f}")


if __name__ == "__main__":
    main()
