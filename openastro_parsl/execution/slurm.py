"""What SLURM says: time strings, partition limits, how a job ended.

One place for the pre-flight checks, the failure classifier and the local test cluster to ask.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

# States a job passes through on its way to an end: asked in one of these, SLURM has not said how it ended yet.
ENDING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "PENDING", "SUSPENDED", "STAGE_OUT", "SIGNALING",
                           "REQUEUED", "RESIZING"})
_ENDED: dict[str, str] = {}


def parse_time(text: str) -> int | None:
    """Seconds in a SLURM time ("30" minutes, "5:00", "02:00:00", "1-00", "1-00:00:00"); None = unlimited."""
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A", ""):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:            # with days: hours, else minutes
        h, m, s = (parts[0], 0, 0) if days else (0, parts[0], 0)
    elif len(parts) == 2:          # with days: hours:minutes, else minutes:seconds
        h, m, s = (parts[0], parts[1], 0) if days else (0, parts[0], parts[1])
    elif len(parts) == 3:
        h, m, s = parts
    else:
        raise ValueError(f"not a SLURM time: {text!r}")
    return ((days * 24 + h) * 60 + m) * 60 + s


def _run(cmd: list[str], timeout: float = 20) -> tuple[int, str]:
    if not shutil.which(cmd[0]):
        return 127, f"{cmd[0]}: command not found"
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, (p.stdout + p.stderr).strip()
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(cmd)} timed out after {timeout:.0f} s"
    except OSError as exc:
        return 126, f"{cmd[0]}: {exc}"


def partition_info(name: str) -> dict[str, str] | None:
    """``scontrol show partition NAME`` as a dict (MaxTime, Nodes, State, TotalCPUs...); None if unknown."""
    code, out = _run(["scontrol", "show", "partition", name, "--oneliner"])
    if code != 0 or not out or "not found" in out.lower() or "invalid partition" in out.lower():
        return None
    return dict(re.findall(r"(\S+?)=(\S*)", out))


def partitions() -> list[str] | None:
    """Partition names `sinfo` lists (None when sinfo fails)."""
    code, out = _run(["sinfo", "-h", "-o", "%P"])
    return [x.rstrip("*") for x in out.split()] if code == 0 else None


def job_state(job_id: str | int | None) -> str | None:
    """How SLURM says a job is or ended (COMPLETED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY...).

    From sacct first, then scontrol (which knows finished jobs only for MinJobAge seconds).
    """
    if not job_id:
        return None
    code, out = _run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", str(job_id)])
    states = [s.split()[0] for s in out.splitlines() if s.strip()] if code == 0 else []
    if states:
        return states[0]
    code, out = _run(["scontrol", "show", "job", "-o", str(job_id)])
    m = re.search(r"\bJobState=(\S+)", out) if code == 0 else None
    return m.group(1) if m else None


def settled_job_state(job_id: str | int | None, *, wait_s: float = 60.0, poll_s: float = 1.0) -> str | None:
    """``job_state`` once SLURM has finished ending the job.

    A block's Parsl manager is lost the moment SLURM signals it at its walltime, while the job still reads
    RUNNING or COMPLETING for up to KillWait seconds: asked then, a walltime loss looks like any lost node. This
    polls for up to ``wait_s`` while the job is in an ``ENDING_STATES`` state; an ended job's state is kept, so
    the quanta of one lost block wait once.
    """
    if not job_id:
        return None
    key = str(job_id)
    if key in _ENDED:
        return _ENDED[key]
    deadline = time.monotonic() + wait_s
    state = job_state(job_id)
    while state in ENDING_STATES and time.monotonic() < deadline:
        time.sleep(poll_s)
        state = job_state(job_id)
    if state is not None and state not in ENDING_STATES:
        _ENDED[key] = state
    return state


def node_size(partition: str) -> tuple[int | None, float | None]:
    """CPUs and memory (GB) of the partition's largest node, from ``sinfo``; None where unknown."""
    code, out = _run(["sinfo", "-h", "-p", partition, "-o", "%c %m"])
    cpus, mem = [], []
    for line in out.splitlines() if code == 0 else []:
        c, _, m = line.partition(" ")
        cpus += [int(x) for x in re.findall(r"\d+", c)]
        mem += [int(x) / 1024 for x in re.findall(r"\d+", m)]
    return (max(cpus) if cpus else None), (max(mem) if mem else None)


def node_hosts(partition: str) -> list[str] | None:
    """Host names of the partition's nodes (None when sinfo fails)."""
    code, out = _run(["sinfo", "-N", "-h", "-p", partition, "-o", "%n"])
    return sorted(set(out.split())) if code == 0 else None
