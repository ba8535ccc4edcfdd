"""Failure classes: what went wrong decides whether to retry, and the user reads it in the report.

science          the task raised (deterministic: not retried)
out_of_memory    MemoryError in the task, or the worker killed by the OOM killer (retried, on a larger
                 executor when the site has one)
worker_lost      the worker process died (segfault, SIGKILL) - retried
manager_lost     the whole node/block went away: job cancelled, walltime reached, node lost - retried
walltime         the block hit its SLURM walltime (told apart from manager_lost when SLURM says so)
cancelled        the block's SLURM job was cancelled (scancel)
executor_failed  Parsl could not run the executor at all (bad provider config, scaling failures)
registry         the outputs could not be registered (a conflict); not retried
disk_full        a disk (or quota) filled up: the run stops, as no quantum can get further; it reruns on
                 --resume once there is space
"""

from __future__ import annotations

import json
import re
from typing import Any

from .slurm import settled_job_state

INFRASTRUCTURE = ("out_of_memory", "worker_lost", "manager_lost", "walltime", "cancelled", "executor_failed")


_DISK_FULL = re.compile(r"No space left on device|Disk quota exceeded|database or disk is full|\[Errno (28|122)\]")


def is_disk_full(text: str | BaseException) -> bool:
    """Whether an error is a full disk or quota (ENOSPC, EDQUOT, SQLite's SQLITE_FULL), however it was wrapped."""
    if isinstance(text, OSError) and text.errno in (28, 122):
        return True
    return bool(_DISK_FULL.search(str(text)))


def classify_manifest(manifest: dict) -> tuple[str | None, str]:
    """The failure class and message of a finished quantum from its manifest; ``(None, "")`` when it succeeded."""
    if manifest.get("ok"):
        return None, ""
    err = manifest.get("error") or {}
    message = f"{err.get('type', 'Error')}: {err.get('message', '')}"
    if is_disk_full(message):
        return "disk_full", message
    if err.get("memory"):
        return "out_of_memory", message
    return "science", message


def _job_from_log(row: Any) -> tuple[str | None, str | None]:
    """(SLURM job id, host) the quantum last started in, from its structured log (the runner writes them)."""
    path = row["jsonl"] if row is not None else None
    if not path:
        return None, None
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None, None
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("slurm_job_id") or rec.get("host"):
            return rec.get("slurm_job_id"), rec.get("host")
    return None, None


_MANAGER = re.compile(r"loss of manager (\S+)")


def learn_manager_job(exc: BaseException, row: Any, manager_jobs: dict[str, str]) -> None:
    """Remember which SLURM job a lost manager ran in, from any of its quanta that had started.

    Their logs say; the manager's quanta still waiting in its queue are then classified by the same job.
    """
    m = _MANAGER.search(str(exc))
    if m and m.group(1) not in manager_jobs:
        job, _ = _job_from_log(row)
        if job:
            manager_jobs[m.group(1)] = job


def lost_job(exc: BaseException, row: Any, manager_jobs: dict[str, str] | None = None) -> str | None:
    """The SLURM job a quantum lost with its worker/manager was running in (its log, else its manager's)."""
    job, _ = _job_from_log(row)
    m = _MANAGER.search(str(exc))
    if not job and m and manager_jobs:
        job = manager_jobs.get(m.group(1))
    return job


def classify_exception(exc: BaseException, row: Any = None,
                       manager_jobs: dict[str, str] | None = None) -> tuple[str, str]:
    """Kind and a one-line message for an exception Parsl raised instead of returning a manifest."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    if is_disk_full(exc):
        return "disk_full", f"{name}: {text}"
    if name in ("ManagerLost", "WorkerLost") or name == "BadStateException" and "lost" in text.lower():
        job, host = lost_job(exc, row, manager_jobs), _job_from_log(row)[1]
        state = settled_job_state(job)
        if state and state.startswith("CANCELLED"):
            return "cancelled", f"SLURM job {job} was cancelled: the quantum's block went away ({text})"
        if state == "TIMEOUT":
            return "walltime", f"SLURM job {job} reached its walltime ({text})"
        if state == "OUT_OF_MEMORY":
            return "out_of_memory", f"SLURM job {job} ran out of memory ({text})"
        if state and state.startswith("NODE_FAIL"):
            return "manager_lost", f"SLURM job {job}: node failure on {host} ({text})"
        if name == "WorkerLost":
            return "worker_lost", f"the worker process died (segfault, OOM kill or SIGKILL): {text}"
        where = f" (SLURM job {job}, state {state or 'unknown'})" if job else ""
        return "manager_lost", f"the node/block running the quantum was lost{where}: {text}"
    if name in ("BadStateException", "ScalingFailed", "ExecutorError", "BadMessage"):
        return "executor_failed", f"{name}: {text}"
    if isinstance(exc, MemoryError):
        return "out_of_memory", f"MemoryError: {text}"
    return "executor_failed", f"{name}: {text}"
