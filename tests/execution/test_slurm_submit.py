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
from testdata import QA, make_small_repo

from openastro_parsl.butler import Butler
from openastro_parsl.execution import slurm_local
from openastro_parsl.execution.preflight import PreflightError
from openastro_parsl.execution.site import load_site
from openastro_parsl.execution.status import StatusStore
from openastro_parsl.execution.submit import STATUS_FILE, Submission
from openastro_parsl.graph.planner import Planner
from openastro_parsl.pipeline.pipeline import load_pipeline

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


@pytest.fixture(scope="module")
def lost_blocks(slurm, tmp_path_factory):
    """Three runs whose pilot jobs end early, all at once through `openastro-submit`: a block cancelled with scancel,
    a block lost to its walltime, a block drained before its walltime. SLURM's walltime minimum is a minute, so each
    takes two minutes or more, mostly waiting. Each block asks for one core (no cores_per_node: its pool still
    starts two workers, one per core of the node), so two runs' blocks share the local node and the third's queue
    behind them. Returns each run's repository, run directory and output, and the cancelled job's id."""
    def repo(name: str, n: int) -> Path:
        root = tmp_path_factory.mktemp(name)
        make_small_repo(root, n=n)
        return root

    one_core = {"cores_per_node": None}
    short = {**one_core, "walltime": "00:01:00"}
    wall, drain, cancel = repo("walltime", 2), repo("drain", 16), repo("cancel", 6)
    marker = wall / "slow-once"
    marker.touch()
    args = {
        "walltime": ["-p", str(FAULTY), "-c", "frameStats:fault=slow_once", "-c", f"frameStats:marker={marker}",
                     "-c", "frameStats:fail_exposures=[101]",
                     "--site", str(site_file(wall, retries=1, provider=short, drain_before_walltime_s=30))],
        "drain": ["-p", f"{FAULTY}#frameStats", "-c", "frameStats:sleep_s=9",
                  "--site", str(site_file(drain, retries=0, provider={**one_core, "walltime": "00:02:00"},
                                          drain_before_walltime_s=60))],
        "cancel": ["-p", str(FAULTY), "-c", "frameStats:sleep_s=4",
                   "--site", str(site_file(cancel, retries=0, provider=one_core))],
    }
    roots = {"walltime": wall, "drain": drain, "cancel": cancel}
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, extra in args.items():  # the longest first: the walltime run waits for two blocks to end
            procs[name] = submit_cli("-b", str(roots[name] / "repo"), "-i", "defaults", "-o", f"u/t/{name}", *extra)
        cancel_dir = run_dir_of(cancel / "repo", "u/t/cancel")
        job = wait_for(lambda: started_in_job(cancel_dir), 180, "a quantum started inside a SLURM job")
        running = job in squeue_jobs()
        subprocess.run(["scancel", job], check=True, timeout=20)
        outs = {name: proc.communicate(timeout=420)[0] for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    runs = {name: {"repo": roots[name] / "repo", "out": outs[name], "code": procs[name].returncode,
                   "run_dir": run_dir_of(roots[name] / "repo", f"u/t/{name}", timeout=5)} for name in roots}
    runs["cancel"].update(job=job, running=running)
    return runs


def test_scancel_of_the_block_is_reported_and_resume_completes(lost_blocks, tmp_path):
    run = lost_blocks["cancel"]
    run_dir, job, out = run["run_dir"], run["job"], run["out"]
    assert run["running"], f"job {job} was not RUNNING when it was cancelled"
    assert run["code"] == 1, out
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
    refs = Butler(run["repo"]).query_datasets("*", "u/t/cancel", find_first=False)
    keys = [(r.name, tuple(sorted(r.data_id.items()))) for r in refs]
    assert len(keys) == len(set(keys)) == 16  # no duplicate datasets


def test_walltime_loss_is_classified_and_retried_in_a_new_block(lost_blocks):
    """A block of one minute: the quantum still running when SLURM ends the job is reported as lost to
    walltime and runs again, successfully, in a fresh block."""
    run = lost_blocks["walltime"]
    assert run["code"] == 0, run["out"]
    assert json.loads((run["run_dir"] / "summary.json").read_text())["ok"]
    status = StatusStore(run["run_dir"] / STATUS_FILE)
    try:
        retries = [d for _, kind, d in status.events() if kind == "retry"]
        assert [r["kind"] for r in retries] == ["walltime"], retries
        row = next(r for r in status.rows() if r["task"] == "frameStats" and json.loads(r["data_id"])["exposure"] == 101)
        assert row["attempts"] == 2
        first_job = retries[0]["message"].split("SLURM job ")[1].split()[0]
        assert row["slurm_job_id"] and row["slurm_job_id"] != first_job  # the retry ran in a new block
    finally:
        status.close()


def test_block_drains_before_its_walltime_and_a_new_block_takes_over(lost_blocks):
    """Blocks stop taking quanta `drain_before_walltime_s` before their walltime: nothing is cut short, the
    first block ends on its own (COMPLETED, not TIMEOUT) and a fresh block runs the rest. Sixteen 9-s quanta on
    two workers need 72 s, so the drain 60 s into a 2-min block must come however fast the block starts; the
    60 s left after it cover a quantum begun just before it, even with the manager's drain request late under
    load (16 s once, with a 30-s margin that left too little)."""
    run = lost_blocks["drain"]
    summary = json.loads((run["run_dir"] / "summary.json").read_text())
    assert run["code"] == 0 and summary["ok"], (summary["failures_by_kind"], run["out"])
    status = StatusStore(run["run_dir"] / STATUS_FILE)
    try:
        assert not [d for _, kind, d in status.events() if kind == "retry"]
        rows = list(status.rows())
    finally:
        status.close()
    jobs = sorted({r["slurm_job_id"] for r in rows}, key=int)
    assert len(jobs) >= 2, "the drained block should have handed the remaining quanta to a new one"
    assert slurm_local.job_state(jobs[0]) == "COMPLETED"
    # the premise of the timing: the first block, though it asked SLURM for one core, ran two workers
    assert len({r["worker_rank"] for r in rows if r["slurm_job_id"] == jobs[0]}) == 2
