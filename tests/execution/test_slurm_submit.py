"""Pipelines submitted to the local single-node SLURM (bin/slurm-local): quanta run inside pilot jobs, the job
id of every quantum is recorded, and a cancelled or timed-out block is reported as such and recovered.

Skipped, with the reason, only when SLURM cannot be started on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from openastro_parsl.execution import slurm_local
from openastro_parsl.execution.preflight import PreflightError
from openastro_parsl.execution.site import load_site
from openastro_parsl.execution.status import StatusStore
from openastro_parsl.execution.submit import STATUS_FILE, Submission
from openastro_parsl.graph.planner import Planner
from openastro_parsl.pipeline.pipeline import load_pipeline

from testdata import QA, make_small_repo

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
SLURM_LOCAL = ROOT / "site_configs" / "slurm-local.yaml"
FAULTY = ROOT / "tests" / "pipelines" / "faulty.yaml"


def site_file(tmp_path: Path, **changes) -> Path:
    """slurm-local.yaml with some keys changed (provider keys under `provider`)."""
    site = yaml.safe_load(SLURM_LOCAL.read_text())
    ex = site["executors"][0]
    ex["provider"].update(changes.pop("provider", {}))
    for key in ("drain_before_walltime_s", "heartbeat_threshold"):
        if key in changes:
            ex[key] = changes.pop(key)
    site.update(changes)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path


def submit_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "openastro_parsl.cli.submit_entry", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def run_dir_of(repo: Path, output_run: str, timeout: float = 60) -> Path:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = sorted((repo / "submit" / output_run).glob(f"*/{STATUS_FILE}"))
        if found:
            return found[-1].parent
        time.sleep(0.5)
    raise AssertionError(f"no run directory appeared under {repo / 'submit' / output_run}")


def wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def counts(run_dir: Path) -> dict[str, int]:
    status = StatusStore(run_dir / STATUS_FILE)
    try:
        out: dict[str, int] = {}
        for row in status.rows():
            out[row["state"]] = out.get(row["state"], 0) + 1
        return out
    finally:
        status.close()


def started_in_job(run_dir: Path) -> str | None:
    """The SLURM job a quantum of the run has started in (from its structured log), once one has."""
    for path in (run_dir / "logs").rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            job = json.loads(line).get("slurm_job_id")
            if job:
                return job
    return None


def squeue_jobs() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=20).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.split()[1:] == ["RUNNING"]]


def test_demo_pipeline_runs_inside_slurm_pilot_jobs(slurm, demo):
    butler = demo.butler
    graph = Planner(butler, load_pipeline(QA), inputs=["demo/defaults"], output_run="u/slurm/qa").plan()
    site, src = load_site(SLURM_LOCAL)
    sub = Submission.start(butler, graph, site, src)
    summary = sub.run()
    assert summary.ok, summary.failures_by_kind
    n = len(graph.quanta)
    assert n > 100
    rows = list(sub.status.rows())
    jobs = {r["slurm_job_id"] for r in rows}
    assert None not in jobs, "every quantum must have run inside a SLURM job"
    assert len(jobs) <= 2, f"{n} quanta became {len(jobs)} SLURM jobs: pilot jobs must hold many quanta"
    (job,) = jobs if len(jobs) == 1 else (sorted(jobs)[0],)
    assert slurm_local.job_state(job).startswith(("COMPLETED", "CANCELLED", "RUNNING"))
    # the job id is in the registry's provenance of every output, and in the report
    ref = butler.query_datasets("fieldQa", "u/slurm/qa")[0]
    assert butler.registry.quantum_provenance(ref.id)["slurm_job_id"] in jobs
    from openastro_parsl.execution.report import report_json

    assert report_json(sub.run_dir)["ok"]


def test_bad_partition_is_refused_before_anything_is_submitted(slurm, tmp_path):
    butler = make_small_repo(tmp_path)
    graph = Planner(butler, load_pipeline(QA), inputs=["defaults"], output_run="u/t/bad").plan()
    site, src = load_site(site_file(tmp_path, provider={"partition": "no_such_partition"}))
    with pytest.raises(PreflightError) as err:
        Submission.start(butler, graph, site, src)
    message = str(err.value)
    assert "no_such_partition" in message and "debug" in message  # names the bad one and the known ones
    assert not (tmp_path / "repo" / "submit").exists() or not list((tmp_path / "repo" / "submit").rglob(STATUS_FILE))
    assert butler.query_datasets("*", "u/t/bad") == [] if butler.registry.query_collections("u/t/bad") else True


def test_walltime_beyond_partition_limit_is_refused(slurm, tmp_path):
    butler = make_small_repo(tmp_path)
    graph = Planner(butler, load_pipeline(QA), inputs=["defaults"], output_run="u/t/long").plan()
    site, src = load_site(site_file(tmp_path, provider={"walltime": "10:00:00"}))
    with pytest.raises(PreflightError, match="walltime"):
        Submission.start(butler, graph, site, src)


def test_scancel_of_the_block_is_reported_and_resume_completes(slurm, tmp_path):
    butler = make_small_repo(tmp_path)
    repo = tmp_path / "repo"
    site = site_file(tmp_path, retries=0)
    proc = submit_cli("-b", str(repo), "-p", str(FAULTY), "-i", "defaults", "-o", "u/t/cancel", "--site", str(site),
                      "-c", "frameStats:sleep_s=4")
    try:
        run_dir = run_dir_of(repo, "u/t/cancel")
        job = wait_for(lambda: started_in_job(run_dir), 180, "a quantum started inside a SLURM job")
        assert job in squeue_jobs()
        subprocess.run(["scancel", job], check=True, timeout=20)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    status = StatusStore(run_dir / STATUS_FILE)
    failed = list(status.rows("WHERE state = 'failed'"))
    assert failed, out
    assert {r["error_kind"] for r in failed} == {"cancelled"}, [(r["error_kind"], r["message"]) for r in failed]
    assert all("cancelled" in r["message"] and job in r["message"] for r in failed)
    status.close()
    from openastro_parsl.execution.report import report_json

    reported = report_json(run_dir)["failed"]
    assert {f["kind"] for f in reported} == {"cancelled"} and all(f["slurm_job_id"] == job for f in reported)

    again = submit_cli("--resume", str(run_dir), "--site", str(site_file(tmp_path)))
    out2, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out2
    final = counts(run_dir)
    assert final == {"succeeded": final["succeeded"]} and final["succeeded"] == 6 + 6 + 2 + 2
    refs = butler.query_datasets("*", "u/t/cancel", find_first=False)
    keys = [(r.name, tuple(sorted(r.data_id.items()))) for r in refs]
    assert len(keys) == len(set(keys)) == 16  # no duplicate datasets


def test_walltime_loss_is_classified_and_retried_in_a_new_block(slurm, tmp_path):
    """A block of one minute: the quantum still running when SLURM ends the job is reported as lost to
    walltime and runs again, successfully, in a fresh block."""
    butler = make_small_repo(tmp_path, n=2)
    marker = tmp_path / "slow-once"
    marker.touch()
    site, src = load_site(site_file(tmp_path, retries=1, provider={"walltime": "00:01:00"},
                                    drain_before_walltime_s=30))
    graph = Planner(butler, load_pipeline(FAULTY, ["frameStats:fault=slow_once", f"frameStats:marker={marker}",
                                                   "frameStats:fail_exposures=[101]"]),
                    inputs=["defaults"], output_run="u/t/walltime").plan()
    sub = Submission.start(butler, graph, site, src)
    summary = sub.run()
    assert summary.ok, summary.failures_by_kind
    retries = [d for _, kind, d in sub.status.events() if kind == "retry"]
    assert [r["kind"] for r in retries] == ["walltime"], retries
    row = next(r for r in sub.status.rows() if r["task"] == "frameStats" and json.loads(r["data_id"])["exposure"] == 101)
    assert row["attempts"] == 2
    first_job = retries[0]["message"].split("SLURM job ")[1].split()[0]
    assert row["slurm_job_id"] and row["slurm_job_id"] != first_job  # the retry ran in a new block


def test_block_drains_before_its_walltime_and_a_new_block_takes_over(slurm, tmp_path):
    """Blocks stop taking quanta `drain_before_walltime_s` before their walltime: nothing is cut short, the
    first block ends on its own (COMPLETED, not TIMEOUT) and a fresh block runs the rest. Twelve 9-s quanta on
    two workers need 54 s, so the 30-s drain must come however fast the block starts (eight could fit in it)."""
    butler = make_small_repo(tmp_path, n=12)
    site, src = load_site(site_file(tmp_path, retries=0, provider={"walltime": "00:01:00"},
                                    drain_before_walltime_s=30))
    graph = Planner(butler, load_pipeline(str(FAULTY) + "#frameStats", ["frameStats:sleep_s=9"]),
                    inputs=["defaults"], output_run="u/t/drain").plan()
    sub = Submission.start(butler, graph, site, src)
    summary = sub.run()
    assert summary.ok, summary.failures_by_kind
    assert not [d for _, kind, d in sub.status.events() if kind == "retry"]
    jobs = sorted({r["slurm_job_id"] for r in sub.status.rows()}, key=int)
    assert len(jobs) >= 2, "the drained block should have handed the remaining quanta to a new one"
    assert slurm_local.job_state(jobs[0]) == "COMPLETED"
