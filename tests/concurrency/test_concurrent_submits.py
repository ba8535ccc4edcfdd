"""Several people on one repository: two submits into two output runs at once and a third process planning while
they run, as real processes of the command line, on each registry backend. Every dataset ends registered once;
SQLite serialises the writers (each waits for the write lock) instead of failing one with 'database is locked'."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from testdata import make_small_repo, succeeded_count

from openastro_parsl.butler import Butler

FAULTY = Path(__file__).resolve().parents[1] / "pipelines" / "faulty.yaml"
SUBMIT = [sys.executable, "-m", "openastro_parsl.cli.submit_entry"]
PLAN = [sys.executable, "-c", "from openastro_parsl.cli.plan import main; main()"]
N = 8


def _submit(root: Path, run: str) -> subprocess.Popen:
    return subprocess.Popen(SUBMIT + ["-b", str(root), "-p", f"{FAULTY}#frameStats", "-i", "defaults", "-o", run,
                                      "-c", "frameStats:sleep_s=1.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_running(root: Path, run: str, proc: subprocess.Popen) -> None:
    deadline = time.time() + 180
    while time.time() < deadline:
        dbs = list((root / "submit" / run).glob("*/status.sqlite3"))
        if dbs and succeeded_count(dbs[0]) >= 1:
            return
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.2)
    raise AssertionError(f"the submit into {run} never got going")


@pytest.mark.both_backends
def test_two_submits_and_a_planner_at_once_register_every_dataset_once(tmp_path, registry_backend):
    butler = make_small_repo(tmp_path, n=N)
    assert butler.registry.backend == registry_backend
    root = butler.root
    first, second = _submit(root, "u/alice/run1"), _submit(root, "u/bob/run2")
    try:
        _wait_running(root, "u/alice/run1", first)
        plan = subprocess.run(PLAN + ["-b", str(root), "-p", f"{FAULTY}#frameStats", "-i", "defaults", "-o",
                                      "u/carol/run3", "--save-qgraph", str(tmp_path / "run3.qgraph")],
                              capture_output=True, text=True, timeout=180)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert (tmp_path / "run3.qgraph").exists()
        still_running = second.poll() is None or first.poll() is None  # the plan overlapped a submit
    finally:
        outs = [p.communicate(timeout=300)[0] for p in (first, second)]
    assert still_running
    for proc, out in zip((first, second), outs, strict=True):
        assert proc.returncode == 0, out
        assert "Traceback" not in out and "database is locked" not in out
    butler = Butler(root)
    for run in ("u/alice/run1", "u/bob/run2"):
        refs = butler.query_datasets("frameStats", run, find_first=False)
        assert sorted(r.data_id["exposure"] for r in refs) == list(range(100, 100 + N))
        prov = butler.registry.quantum_provenance(refs[0].id)
        assert prov is not None and prov["task"] == "frameStats" and prov["host"] and len(prov["inputs"]) == 1
    assert butler.registry.count_datasets() == N + 1 + 2 * N  # raws, the refcat, both runs' outputs
    checked, problems = butler.verify()
    assert checked == 3 * N + 1 and problems == []


def test_an_sqlite_lock_held_too_long_stops_a_submit_in_order_and_resume_finishes(tmp_path):
    """Another process keeps the SQLite write lock past the busy timeout: the submit stops with one line (no
    'database is locked' traceback), registers nothing twice, and --resume registers the rest."""
    import os

    n = 4
    butler = make_small_repo(tmp_path, n=n)
    root, run = butler.root, "u/dave/held"
    env = {**os.environ, "OPENASTRO_REGISTRY_BUSY_TIMEOUT": "1"}
    proc = subprocess.Popen(SUBMIT + ["-b", str(root), "-p", f"{FAULTY}#frameStats", "-i", "defaults", "-o", run,
                                      "-c", "frameStats:sleep_s=1.0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_running(root, run, proc)
    with butler.registry.transaction() as c:  # hold the write lock until the submit gives up
        butler.registry.register_run("u/dave/blocker", conn=c)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    assert "Traceback" not in err and "database is locked" not in err
    assert "is busy: another process held its write lock for more than 1 s" in err
    run_dir = next((root / "submit" / run).glob("2*"))
    done = len(Butler(root).query_datasets("frameStats", run, find_first=False))
    assert 1 <= done < n
    resume = subprocess.run(SUBMIT + ["--resume", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stdout + resume.stderr
    refs = Butler(root).query_datasets("frameStats", run, find_first=False)
    assert sorted(r.data_id["exposure"] for r in refs) == list(range(100, 100 + n))
