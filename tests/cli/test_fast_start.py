"""Fast start (issue 16): the plan and submit commands and the worker-side runner load no heavy library at import;
Parsl's processes import it without its unused extras; Parsl starts while the run registers itself.

A top-level ``import astropy`` or ``import parsl`` slipping back into the path of ``openastro-plan`` /
``openastro-submit`` costs every command a second; each check runs in a fresh interpreter, so what an earlier
test imported cannot hide it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from testdata import QA, make_small_repo

from openastro_parsl.errors import OpenAstroError
from openastro_parsl.execution.site import LOCAL_STRATEGY_PERIOD_S, load_site, parsl_config
from openastro_parsl.execution.submit import Submission
from openastro_parsl.graph.planner import Planner
from openastro_parsl.graph.quantum_graph import QuantumGraph
from openastro_parsl.pipeline.pipeline import load_pipeline

HEAVY = ("astropy", "scipy", "erfa", "parsl", "matplotlib", "torch", "photutils", "sep", "reproject", "pandas",
         "dynesty", "batman", "astroquery")
ROOT = Path(__file__).resolve().parents[2]


def _loaded_after(modules: list[str]) -> set[str]:
    code = ("import json, sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("modules", [
    ["openastro_parsl.cli.plan", "openastro_parsl.cli.submit", "openastro_parsl.butler"],
    ["openastro_parsl.execution.runner"],  # what a Parsl worker imports before its first quantum
])
def test_command_paths_load_no_heavy_library(modules):
    heavy = _loaded_after(modules) & set(HEAVY)
    assert not heavy, f"importing {modules} loads {sorted(heavy)}: import them where they are used"


def test_planning_the_science_pipeline_loads_no_heavy_library(demo, tmp_path):
    """``openastro-plan`` of the whole science pipeline imports every task class (for its connections, config and
    dimensions) but none of the science libraries their ``run`` methods use: those load on the worker."""
    pipeline = ROOT / "pipelines" / "openastro.yaml"
    graph = tmp_path / "science.qgraph"
    args = ["-b", str(demo.butler.root), "-p", str(pipeline), "-i", "demo/defaults", "-o", "u/t/fast",
            "--save-qgraph", str(graph)]
    code = ("import json, sys\nfrom openastro_parsl.cli.plan import main\n"
            f"main({args!r}, standalone_mode=False)\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    modules = set(json.loads(out.stdout.splitlines()[-1]))
    heavy = {m.split(".")[0] for m in modules} & set(HEAVY)
    assert not heavy, f"planning {pipeline.name} loads {sorted(heavy)}: import them where they are used"
    tasks = load_pipeline(str(pipeline)).tasks
    assert {t.task_class.__module__ for t in tasks} <= modules  # the planner did import every task class
    counts = QuantumGraph.load(graph).counts_by_task()
    assert set(counts) <= {t.label for t in tasks} and min(counts.values()) > 0
    assert {"plateSolve", "makeLightcurve", "ttvFit", "rbClassify"} <= set(counts)  # every branch was planned


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "pipelines").glob("*.yaml")))
def test_loading_every_pipeline_loads_no_heavy_library(name):
    """Every shipped pipeline (train_realbogus.yaml's simulator and torch included) loads its task classes only."""
    code = ("import json, sys\nfrom openastro_parsl.pipeline.pipeline import load_pipeline\n"
            f"load_pipeline({str(ROOT / 'pipelines' / name)!r})\n"
            "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    heavy = set(json.loads(out.stdout.splitlines()[-1])) & set(HEAVY)
    assert not heavy, f"loading pipelines/{name} imports {sorted(heavy)}: import them where they are used"


def test_json_datasets_round_trip_without_astropy(tmp_path):
    """The datastore reads and writes a JSON dataset without loading the image module (astropy)."""
    code = f"""
import sys
from openastro_parsl.datastore.datastore import Datastore
ds = Datastore({str(tmp_path)!r})
loc = ds.write_at({{"x": [1, 2]}}, "r/a.json", "json")
assert ds.formatter("StructuredData").read(ds.root / loc["path"]) == {{"x": [1, 2]}}
print("astropy" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_local_pools_start_with_this_interpreter(tmp_path):
    """A local block runs Parsl's worker pool with sys.executable, not whatever script PATH finds (a pyenv shim)."""
    site, _ = load_site(None)
    cfg = parsl_config(site, tmp_path)
    # Parsl starts init_blocks at its strategy's second tick: a local block must not wait seconds for it
    assert cfg.strategy_period <= 0.5
    (htex,) = cfg.executors
    cmd = htex.launch_cmd
    assert cmd.startswith(f"{sys.executable} -m openastro_parsl.execution.process_worker_pool "), cmd
    assert "{block_id}" in cmd and "--hb_threshold=" in cmd  # Parsl's own options kept, formatted by Parsl


@pytest.mark.parametrize("provider", ["{kind: slurm, partition: debug}",
                                      "{kind: local, worker_init: 'source /opt/other/bin/activate'}"])
def test_pools_elsewhere_keep_parsls_command(tmp_path, provider):
    """SLURM nodes, or a local block whose worker_init activates another environment, find their own Python."""
    f = tmp_path / "s.yaml"
    f.write_text(f"executors:\n  - label: s\n    provider: {provider}\n")
    site, _ = load_site(f)
    cfg = parsl_config(site, tmp_path)
    (htex,) = cfg.executors
    assert htex.launch_cmd.startswith("process_worker_pool.py ")
    assert cfg.strategy_period == (2 if site.uses_slurm else LOCAL_STRATEGY_PERIOD_S)


def test_planned_records_carry_plain_str_keys(tmp_path):
    """Records a graph carries to the workers have str keys, not SQLAlchemy's quoted_name.

    A quoted_name in a payload makes every worker import SQLAlchemy to unpickle its first quantum.
    """
    butler = make_small_repo(tmp_path, n=2)
    graph = Planner(butler, load_pipeline(QA), inputs=["defaults"], output_run="u/t/qa").plan()
    keys = [k for recs in graph.records.values() for rec in recs.values() for k in rec]
    assert keys and {type(k) for k in keys} == {str}


def test_parsl_extras_hidden_only_while_parsl_imports():
    """Parsl imported under ``parsl_without_extras`` loads no SQLAlchemy; afterwards SQLAlchemy imports normally,
    and a library imported before is left alone."""
    code = """
import sys
from openastro_parsl.execution.lean_import import parsl_without_extras
with parsl_without_extras():
    import parsl.executors.high_throughput.process_worker_pool
    try:
        import sqlalchemy
        hidden = False
    except ModuleNotFoundError:
        hidden = True
during = "sqlalchemy" in sys.modules
import sqlalchemy
with parsl_without_extras():
    import sqlalchemy.orm  # already imported before: not hidden
print(hidden, during, "sqlalchemy.orm" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "True"]


def _stamp_repo(root: Path) -> Path:
    """The benchmark's one-quantum repository (``benchmarks/fast_start.py``); returns its graph."""
    code = f"from pathlib import Path\nimport benchmarks.fast_start as fs\nfs.build(Path({str(root)!r}))"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)
    return root / "one.qgraph"


def test_one_quantum_submit_runs_in_one_lean_worker(tmp_path):
    """The real command on a one-quantum graph: one worker starts, and it never imported Parsl's extras."""
    graph = _stamp_repo(tmp_path)
    out = subprocess.run([sys.executable, "-m", "openastro_parsl.cli.submit_entry", "--qgraph", str(graph)],
                         capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (stamp,) = (tmp_path / "repo" / "u" / "bench" / "start").rglob("startStamp*.json")
    assert json.loads(stamp.read_text())["worker_extras"] == []
    run_dir = Path(re.search(r"run directory: (\S+)", out.stdout).group(1))
    assert len(list((run_dir / "parsl_workers").rglob("worker_*.log"))) == 1


def _ours_left(run_dir: Path) -> list[str]:
    """Processes still running for this run: its worker pool (named by its log directory) or an interchange child."""
    left = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(run_dir) in cmd:
            left.append(cmd)
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(child.cmdline())
            if "interchange" in cmd or "execution.shutdown" in cmd:
                left.append(cmd)
    return left


def test_refused_run_stops_the_parsl_it_started(tmp_path):
    """Parsl starts while the run registers itself; a registration that fails leaves no interchange or pool."""
    butler = make_small_repo(tmp_path, n=1)
    graph = Planner(butler, load_pipeline(QA), inputs=["defaults"], output_run="u/t/qa").plan()
    graph.dataset_types["raw"]["storage_class"] = "StructuredData"  # registered as RawImage: a conflict
    site, src = load_site(None)
    sub = Submission.start(butler, graph, site, src)
    with pytest.raises(OpenAstroError, match="raw"):
        sub.run()
    assert (sub.run_dir / "parsl" / "000" / "local" / "interchange.log").exists()  # Parsl had started
    deadline = time.monotonic() + 10
    while _ours_left(sub.run_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _ours_left(sub.run_dir)
    assert sub.lock is None  # the run's lock is released too
