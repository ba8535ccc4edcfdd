"""Fast start: how long `openastro-submit` of a one-quantum graph takes to start the quantum, and to exit after it.

A one-quantum graph (``StampTask`` below: it writes the time it started) is planned over a fresh repository on
the default local site. Two runs, each in a fresh process:

- ``cli``: the real command, ``python -m openastro_parsl.cli.submit_entry --qgraph G``, timed from the moment
  the benchmark starts it: quantum start (the stamp the quantum wrote), quantum end (its manifest), exit;
- ``parts``: the same steps the command takes (imports, graph load, registry open, ``Submission.start``, Parsl
  DFK + interchange start, worker pool start, the quantum, registration, Parsl cleanup), each timed. Parsl
  starts in a thread while the run registers itself (the "meanwhile" line). The worker pool's steps are read
  from its logs: its start (the manager log's first record, after its imports), its multiprocessing manager's
  start ("Manager will spawn"), the first worker's start ("Worker N started").

    python benchmarks/fast_start.py [--repeat 3]

Targets (issue 16): the quantum starts within 3 s of the command on a quiet 2-core machine and the command
exits within 2 s after the quantum ends. The machine's load average is printed alongside: it moves these 2-3x.
"""

from __future__ import annotations

import time

_T_MODULE = time.time()  # before this module's imports: the interpreter's own start-up ends here

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from openastro_parsl.pipeline.connections import Connections, Input, Output
from openastro_parsl.pipeline.task import PipelineTask

# StampTask is imported by its path ``benchmarks.fast_start`` in the submit process and in Parsl's workers: they
# find it through PYTHONPATH (inherited), whatever directory the benchmark was started from.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

EXPOSURE = ("instrument", "exposure")
PIPELINE = """
description: one quantum that writes when it started (benchmarks/fast_start.py)
tasks:
  stamp: benchmarks.fast_start.StampTask
"""


class StampConnections(Connections):
    seed = Input("noopSeed", EXPOSURE, "StructuredData")
    out = Output("startStamp", EXPOSURE, "StructuredData")


class StampTask(PipelineTask):
    """Writes the wall-clock time its ``run`` began (the moment the quantum's own code started), and which of
    Parsl's unused extras its worker process had imported (none: ``execution/lean_import.py``)."""

    dimensions = EXPOSURE
    Connections = StampConnections

    def run(self, seed):
        from openastro_parsl.execution.lean_import import PARSL_EXTRAS

        return {"out": {"started": time.time(), "seed": seed,
                        "worker_extras": sorted(m for m in PARSL_EXTRAS if m in sys.modules)}}


def build(root: Path) -> Path:
    """A repository with one seed dataset and the saved one-quantum graph; returns the graph's path."""
    from openastro_parsl.butler import Butler
    from openastro_parsl.graph.planner import Planner
    from openastro_parsl.pipeline.pipeline import load_pipeline
    from openastro_parsl.registry.refs import DatasetType

    butler = Butler.create(root / "repo")
    reg = butler.registry
    reg.sync_dimension_records("instrument", [{"name": "bench"}])
    reg.sync_dimension_records("band", [{"name": "r"}])
    reg.sync_dimension_records("field", [{"name": "f"}])
    reg.sync_dimension_records("exposure", [{"instrument": "bench", "id": 1, "band": "r", "field": "f"}])
    seed = DatasetType("noopSeed", EXPOSURE, "StructuredData")
    reg.register_dataset_type(seed)
    reg.register_run("seeds")
    reg.insert_datasets(seed, "seeds", [({"instrument": "bench", "exposure": 1},
                                         butler.datastore.write_at({"x": 1}, "seeds/seed_1.json", "json"))])
    (root / "p.yaml").write_text(PIPELINE)
    graph = Planner(butler, load_pipeline(root / "p.yaml"), inputs=["seeds"], output_run="u/bench/start").plan()
    graph.save(root / "one.qgraph")
    return root / "one.qgraph"


def _stamp(run_dir: Path) -> float:
    repo = next(p for p in run_dir.parents if (p / "butler.yaml").exists())
    path = next((repo / "u" / "bench" / "start").rglob("startStamp*.json"))
    return float(json.loads(path.read_text())["started"])


def _run_row(run_dir: Path) -> dict:
    from openastro_parsl.execution.status import StatusStore

    store = StatusStore(run_dir / "status.sqlite3")
    try:
        (row,) = store.rows()
        return dict(row)
    finally:
        store.close()


def _log_time(run_dir: Path, name: str, text: str = "") -> float | None:
    """The earliest record of the worker logs called ``name`` (that holds ``text``): Parsl's records start with
    the epoch time."""
    times = []
    for log in (run_dir / "parsl_workers").rglob(name):
        for line in log.read_text().splitlines():
            m = re.match(r"(\d+\.\d+) ", line)
            if m and text in line:
                times.append(float(m.group(1)))
                break
    return min(times) if times else None


def _worker_start(run_dir: Path) -> float | None:
    """When the worker pool started: the first record of its manager log (written after its imports)."""
    return _log_time(run_dir, "manager.log")


def cli_run(graph: Path) -> dict:
    """The real command in a fresh process: times from its launch."""
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "openastro_parsl.cli.submit_entry", "--qgraph", str(graph)],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "140"})
    t_exit = time.time()
    if out.returncode != 0:
        sys.exit(f"openastro-submit failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    run_dir = Path(re.search(r"run directory: (\S+)", out.stdout).group(1))
    row = _run_row(run_dir)
    return {"dfk_start_s": _dfk_start(run_dir) - t0, "pool_start_s": (_worker_start(run_dir) or float("nan")) - t0,
            "quantum_start_s": _stamp(run_dir) - t0, "quantum_end_s": row["ended"] - t0,
            "exit_after_end_s": t_exit - row["ended"], "total_s": t_exit - t0}


def _dfk_start(run_dir: Path) -> float:
    """When the DataFlowKernel started: the first record of the run's parsl.log (local time, milliseconds)."""
    first = (run_dir / "parsl" / "parsl.log").read_text()[:23]
    return datetime.strptime(first, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def parts_child(graph_path: Path) -> None:
    """The command's steps one by one (as ``cli/submit.py`` takes them), each timed; prints JSON."""
    t = {"launched": float(os.environ["FAST_START_T0"]), "interpreter": _T_MODULE}
    from openastro_parsl.cli import submit as cli
    from openastro_parsl.execution import submit as submit_mod
    t["imports"] = time.time()
    from openastro_parsl.butler import Butler
    from openastro_parsl.graph.quantum_graph import QuantumGraph

    graph = QuantumGraph.load(graph_path)
    t["graph_load"] = time.time()
    butler = Butler(graph.header["repo"])
    t["registry_open"] = time.time()
    site, source = cli.load_site(None)
    sub = submit_mod.Submission.start(butler, graph, site, source)
    t["submission_start"] = time.time()
    real_load = submit_mod.load_parsl

    def timed_load(config):  # the DFK and its interchange: what Submission.run starts first
        t["parsl_load_begin"] = time.time()
        dfk = real_load(config)
        t["parsl_loaded"] = time.time()
        return dfk

    real_init = submit_mod.Submission._init_loop

    def timed_init(self, states):  # the last step the main thread takes while Parsl starts in the background
        real_init(self, states)
        t["prepared"] = time.time()

    submit_mod.load_parsl = timed_load
    submit_mod.Submission._init_loop = timed_init  # type: ignore[method-assign]
    summary = sub.run()
    t["exit"] = time.time()
    assert summary.ok, summary.to_json()
    row = _run_row(sub.run_dir)
    t["worker_pool_start"] = _worker_start(sub.run_dir) or float("nan")
    t["pool_manager_ready"] = _log_time(sub.run_dir, "manager.log", "Manager will spawn") or float("nan")
    t["worker_started"] = _log_time(sub.run_dir, "worker_*.log", "started") or float("nan")
    t["quantum_start"] = _stamp(sub.run_dir)
    t["quantum_end"] = row["ended"]
    print(json.dumps(t))


PARTS = [  # (label, from, to): one after the other, but for the line marked "meanwhile"
    ("interpreter start", "launched", "interpreter"),
    ("imports", "interpreter", "imports"),
    ("graph load", "imports", "graph_load"),
    ("registry open", "graph_load", "registry_open"),
    ("Submission.start (lock, run dir, status store)", "registry_open", "submission_start"),
    ("import parsl (in a thread)", "submission_start", "parsl_load_begin"),
    ("  meanwhile: run registration, reconcile, loop set-up", "submission_start", "prepared"),
    ("Parsl DFK + interchange start", "parsl_load_begin", "parsl_loaded"),
    ("worker pool start (block launch, pool's imports)", "parsl_loaded", "worker_pool_start"),
    ("pool's multiprocessing manager (spawned)", "worker_pool_start", "pool_manager_ready"),
    ("worker start (spawned, imports Parsl)", "pool_manager_ready", "worker_started"),
    ("first quantum start (handover, task imports)", "worker_started", "quantum_start"),
    ("quantum run", "quantum_start", "quantum_end"),
    ("quantum end -> process exit", "quantum_end", "exit"),
]


def parts_run(graph: Path) -> dict:
    env = {**os.environ, "FAST_START_T0": repr(time.time())}
    out = subprocess.run([sys.executable, __file__, "--parts-child", str(graph)], capture_output=True, text=True,
                         env=env)
    if out.returncode != 0:
        sys.exit(f"parts run failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="Runs of each kind (medians are printed).")
    ap.add_argument("--parts-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.parts_child:
        parts_child(args.parts_child)
        return
    top = Path(tempfile.mkdtemp(prefix="fast-start-"))
    graphs = [build(top / f"r{i}") for i in range(2 * args.repeat)]  # a fresh repository for every run
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores); repos in {top}")
    parts = [parts_run(g) for g in graphs[:args.repeat]]
    print("parts (median of %d runs, s):" % args.repeat)
    for label, a, b in PARTS:
        print(f"  {label:<56} {statistics.median(p[b] - p[a] for p in parts):6.2f}")
    cli = [cli_run(g) for g in graphs[args.repeat:]]
    med = {k: statistics.median(c[k] for c in cli) for k in cli[0]}
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("runs of openastro-submit, s from the command: "
          + "; ".join(f"DFK start {c['dfk_start_s']:.2f}, worker pool {c['pool_start_s']:.2f}, quantum start "
                      f"{c['quantum_start_s']:.2f}, exit {c['exit_after_end_s']:.2f} after its end" for c in cli))
    print(f"quantum_start_s={med['quantum_start_s']:.2f} exit_after_end_s={med['exit_after_end_s']:.2f} "
          f"total_s={med['total_s']:.2f} load1={load[0]:.2f}")


if __name__ == "__main__":
    main()
