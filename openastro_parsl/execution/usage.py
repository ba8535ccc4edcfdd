"""What one quantum cost inside a long-lived worker process: CPU seconds and peak resident memory.

A Parsl worker runs many quanta one after another, so the process's own counters are lifetime figures:
``ru_maxrss`` is the largest the worker ever was, not what this quantum needed. CPU is measured as the
difference of ``getrusage`` before and after (the worker's threads, plus subprocesses the task waited for:
solve-field, a multiprocessing pool). Peak memory is the worker's high-water mark after resetting it at the
quantum's start (Linux ``/proc/self/clear_refs``, value 5); where that reset is refused the lifetime figure
is reported and marked ``rss_scope = "worker"``, so a report never passes it off as the quantum's own.
Subprocesses' memory is not in the peak.
"""

from __future__ import annotations

import os
import re
import resource
import sys
from typing import Any

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"
_HWM = re.compile(r"^VmHWM:\s+(\d+)\s+kB", re.MULTILINE)
# ru_maxrss is in kilobytes on Linux, in bytes on macOS
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _reset_peak() -> bool:
    """Reset this process's peak-RSS mark to its current RSS; False where the kernel does not allow it."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_mb() -> float | None:
    try:
        with open(_STATUS) as f:
            found = _HWM.search(f.read())
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None


class QuantumUsage:
    """Counters taken at a quantum's start; ``finish()`` gives its CPU seconds and peak memory."""

    def __init__(self) -> None:
        self.scope = "quantum" if _reset_peak() else "worker"
        self._self = resource.getrusage(resource.RUSAGE_SELF)
        self._children = resource.getrusage(resource.RUSAGE_CHILDREN)

    def finish(self) -> dict[str, Any]:
        """``cpu`` (s, own threads and waited-for subprocesses), ``maxrss_mb`` and its ``rss_scope``."""
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = _cpu(own) - _cpu(self._self) + _cpu(children) - _cpu(self._children)
        peak = _hwm_mb() if self.scope == "quantum" else None
        scope = self.scope if peak is not None else "worker"
        if peak is None:
            peak = own.ru_maxrss * _MAXRSS_UNIT / (1024 * 1024)
        return {"cpu": cpu, "maxrss_mb": peak, "rss_scope": scope}


def worker_identity() -> dict[str, Any]:
    """Where a quantum runs: host, process, and the Parsl block / worker pool / worker rank when under HTEX."""
    import socket

    env = os.environ
    rank = env.get("PARSL_WORKER_RANK")
    return {"host": socket.gethostname(), "pid": os.getpid(), "block_id": env.get("PARSL_WORKER_BLOCK_ID"),
            "pool_id": env.get("PARSL_WORKER_POOL_ID"), "worker_rank": int(rank) if rank and rank.isdigit() else None,
            "slurm_job_id": env.get("SLURM_JOB_ID")}
