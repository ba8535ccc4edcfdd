"""Fast start (issue 16): the plan and submit commands and the worker-side runner load no heavy library at import.

A top-level ``import astropy`` or ``import parsl`` slipping back into the path of ``openastro-plan`` /
``openastro-submit`` costs every command a second; each check runs in a fresh interpreter, so what an earlier
test imported cannot hide it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from testdata import QA, make_small_repo

from openastro_parsl.execution.site import load_site, parsl_config
from openastro_parsl.graph.planner import Planner
from openastro_parsl.pipeline.pipeline import load_pipeline

HEAVY = ("astropy", "scipy", "parsl", "matplotlib", "torch", "photutils", "sep", "reproject", "pandas")
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
    assert cmd.startswith(f"{sys.executable} "), cmd
    script = cmd.split()[1]
    assert script.endswith("process_worker_pool.py") and Path(script).is_file()
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
    assert cfg.strategy_period == (2 if site.uses_slurm else 0.2)


def test_planned_records_carry_plain_str_keys(tmp_path):
    """Records a graph carries to the workers have str keys, not SQLAlchemy's quoted_name.

    A quoted_name in a payload makes every worker import SQLAlchemy to unpickle its first quantum.
    """
    butler = make_small_repo(tmp_path, n=2)
    graph = Planner(butler, load_pipeline(QA), inputs=["defaults"], output_run="u/t/qa").plan()
    keys = [k for recs in graph.records.values() for rec in recs.values() for k in rec]
    assert keys and {type(k) for k in keys} == {str}
