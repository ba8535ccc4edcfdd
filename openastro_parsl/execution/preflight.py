"""Pre-flight checks of a SLURM site before anything is submitted: one clear line per problem.

A typo in a partition name otherwise shows up as Parsl retrying sbatch in a loop, minutes into a run.
"""

from __future__ import annotations

import shutil

from ..errors import OpenAstroError
from .site import ExecutorConfig, SiteConfig
from .slurm import _run, parse_time, partition_info, partitions


class PreflightError(OpenAstroError):
    """The site cannot run anything as configured."""


def check_executor(e: ExecutorConfig, source: str, check_python: bool = True) -> list[str]:
    p = e.provider
    problems: list[str] = []
    where = f"{source}: executor {e.label!r}"
    if p.kind != "slurm":
        return problems
    for tool in ("sbatch", "squeue", "scancel", "scontrol"):
        if shutil.which(tool) is None:
            problems.append(f"{where}: {tool} is not on PATH: is this a SLURM login node? (bin/slurm-local start "
                            "brings up a local one)")
            return problems
    info = partition_info(p.partition or "")
    if info is None:
        names = partitions()
        known = ", ".join(names) if names is not None else "unknown (sinfo failed)"
        problems.append(f"{where}: partition {p.partition!r} does not exist; partitions: {known}")
    else:
        limit = parse_time(info.get("MaxTime", "UNLIMITED"))
        if limit is not None and p.walltime_seconds() > limit:
            problems.append(f"{where}: walltime {p.walltime} exceeds partition {p.partition!r}'s limit "
                            f"{info.get('MaxTime')}")
        if info.get("State", "UP") != "UP":
            problems.append(f"{where}: partition {p.partition!r} is {info.get('State')}")
    if p.account and shutil.which("sacctmgr"):
        code, out = _run(["sacctmgr", "-n", "-P", "show", "account", p.account, "format=Account"])
        if code == 0 and p.account not in out.split():
            problems.append(f"{where}: account {p.account!r} is not known to SLURM (sacctmgr show account)")
    if check_python:
        script = f"{p.worker_init}\npython3 -c 'import openastro_parsl, parsl' && command -v process_worker_pool.py"
        code, out = _run(["bash", "-c", script], timeout=60)
        if code != 0:
            last = out.splitlines()[-1] if out else f"exit status {code}"
            problems.append(f"{where}: worker_init does not give a Python that imports openastro_parsl and parsl "
                            f"with process_worker_pool.py on PATH: {last}")
    return problems


def preflight(site: SiteConfig, source: str) -> None:
    problems = [line for e in site.executors for line in check_executor(e, source)]
    if problems:
        raise PreflightError("site pre-flight failed:\n  " + "\n  ".join(problems))
