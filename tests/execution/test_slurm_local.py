"""The local single-node SLURM (bin/slurm-local): it comes up sized to this machine, runs and cancels jobs, and
the project sees how they ended.  The cluster is left running for the other SLURM test modules (start is
idempotent); `bin/slurm-local stop` tears it down."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from openastro_parsl.execution import slurm_local
from openastro_parsl.execution.slurm import job_state as _slurm_job_state
from openastro_parsl.execution.slurm import parse_time, settled_job_state


def run(*args: str, timeout: float = 30) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
    return proc.stdout


def wait_until(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slurm
def test_start_is_idempotent_and_status_is_up(slurm):
    assert slurm["OPENASTRO_SLURM_PARTITION"] == "debug"
    assert os.path.realpath("/etc/slurm/slurm.conf") == os.path.realpath(slurm["SLURM_CONF"])
    again = subprocess.run(["bash", str(slurm_local.script()), "start"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "already up" in again.stdout
    status = subprocess.run(["bash", str(slurm_local.script()), "status"], capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0, status.stdout


@pytest.mark.slurm
def test_node_is_idle_with_all_cpus(slurm):
    host = run("hostname", "-s").strip()
    (line,) = run("sinfo", "-h", "-N", "-p", "debug", "-o", "%N %t %c").splitlines()
    node, state, cpus = line.split()
    assert node == host
    assert state in ("idle", "mix", "alloc")  # other modules' pilot jobs may be on it already
    assert int(cpus) == os.cpu_count() == int(run("nproc").strip())


@pytest.mark.slurm
def test_partition_walltime_limit_is_known(slurm):
    assert slurm["OPENASTRO_SLURM_MAX_WALLTIME"] == "02:00:00"
    assert slurm_local.partition_max_walltime_s("debug") == 2 * 3600
    info = slurm_local.partition_info("debug")
    assert info["Default"] == "YES" and info["State"] == "UP"


@pytest.mark.slurm
def test_sbatch_job_runs_and_writes_hostname(slurm, tmp_path):
    out = tmp_path / "job-%j.out"
    job = run("sbatch", "--parsable", "--wait", "-p", "debug", "-t", "00:02:00", "-o", str(out),
              "--wrap", "hostname; sleep 1", timeout=90).strip().split(";")[0]
    assert (tmp_path / f"job-{job}.out").read_text().strip() == run("hostname").strip()
    assert wait_until(lambda: slurm_local.job_state(job) == "COMPLETED", 20, f"job {job} COMPLETED")


@pytest.mark.slurm
def test_scancel_is_seen_as_cancelled(slurm, tmp_path):
    job = run("sbatch", "--parsable", "-p", "debug", "-t", "00:10:00", "-o", str(tmp_path / "sleep.out"),
              "--wrap", "sleep 300").strip().split(";")[0]
    wait_until(lambda: run("squeue", "-h", "-j", job, "-o", "%T").strip() == "RUNNING", 30, f"job {job} RUNNING")
    run("scancel", job)
    # asked at once, while SLURM may still be ending it: how it ended, not RUNNING or COMPLETING
    assert (settled_job_state(job, wait_s=30) or "").startswith("CANCELLED")
    wait_until(lambda: (slurm_local.job_state(job) or "").startswith("CANCELLED"), 30, f"job {job} CANCELLED")
    if slurm["OPENASTRO_SLURM_SACCT"] == "1":
        # What the project's failure classification asks (sacct): the pilot job was cancelled.
        assert _slurm_job_state(job) == "CANCELLED"
    assert "JobState=CANCELLED" in run("scontrol", "show", "job", job)  # MinJobAge keeps it for 5 minutes


@pytest.mark.parametrize("text,seconds", [
    ("02:00:00", 7200), ("2:00:00", 7200), ("30", 1800), ("5:30", 330), ("1-00:00:00", 86400),
    ("1-2", 93600), ("1-02:30", 95400), ("UNLIMITED", None), ("INFINITE", None),
])
def test_parse_slurm_time(text, seconds):
    assert parse_time(text) == seconds


def test_parse_env():
    env = slurm_local.parse_env("slurm-local: up\nexport SLURM_CONF=/x/etc/slurm.conf\nexport A=1\n")
    assert env == {"SLURM_CONF": "/x/etc/slurm.conf", "A": "1"}
