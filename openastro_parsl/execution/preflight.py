"""Pre-flight checks of a site before anything is submitted: one clear line per problem.

A typo in a partition name otherwise shows up as Parsl retrying sbatch in a loop, minutes into a run; a worker
bigger than a node, or an address the nodes cannot reach, as a submit that waits forever.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket

from ..errors import OpenAstroError
from .site import ExecutorConfig, SiteConfig, SiteError, worker_address
from .slurm import _run, node_hosts, node_size, parse_time, partition_info, partitions


class PreflightError(OpenAstroError):
    """The site cannot run anything as configured."""


def check_executor(e: ExecutorConfig, source: str, check_python: bool = True) -> list[str]:
    """Problems of one SLURM executor: tools on PATH, partition, walltime limit, account, ``worker_init``."""
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


def fit_problems(e: ExecutorConfig, source: str) -> list[str]:
    """Workers that cannot fit a node: Parsl's pool would start none and the submit would wait forever.

    A SLURM node's size is cores_per_node / mem_per_node when given (Parsl tells the pool exactly that), else the
    partition's largest node per sinfo; a local one is this machine (memory: what is available now, which is what the
    pool divides).
    """
    p = e.provider
    where = f"{source}: executor {e.label!r}"
    cores: int | None
    mem: float | None  # GB
    if p.kind == "slurm":
        cores, mem = p.cores_per_node, p.mem_per_node
        of_cores = of_mem = f"of a node of partition {p.partition!r}"
        if (cores is None or mem is None) and shutil.which("sinfo"):
            n_cores, n_mem = node_size(p.partition or "")
            cores, mem = cores or n_cores, mem or n_mem
    else:
        import psutil

        cores, mem = os.cpu_count(), psutil.virtual_memory().available / 2**30
        of_cores, of_mem = "of this machine", "available on this machine"
    problems = []
    if cores is not None and e.cores_per_worker > cores:
        problems.append(f"{where}: cores_per_worker {e.cores_per_worker:g} is more than the {cores} cores {of_cores}: "
                        "no worker could start")
    if mem is not None and e.mem_per_worker is not None and e.mem_per_worker > mem:
        problems.append(f"{where}: mem_per_worker {e.mem_per_worker:g} GB is more than the {mem:.1f} GB {of_mem}: "
                        "no worker could start")
    return problems


def address_problems(e: ExecutorConfig, source: str) -> list[str]:
    """An address the workers cannot reach: they would never connect and the submit would wait forever."""
    where = f"{source}: executor {e.label!r}"
    try:
        addr = worker_address(e)
    except SiteError as exc:
        return [f"{source}: {exc}"]
    if e.provider.kind != "slurm" or not ipaddress.ip_address(addr).is_loopback:
        return []
    here = {socket.gethostname(), socket.getfqdn(), "localhost"}
    remote = [h for h in node_hosts(e.provider.partition or "") or [] if h not in here]
    if remote:
        return [f"{where}: workers on {remote[0]} would connect to {addr}, a loopback address of this host: set "
                "executors[].interface (e.g. ib0) or address to one the compute nodes reach"]
    return []


def preflight(site: SiteConfig, source: str) -> None:
    """Every check, for every executor (SLURM queries only for SLURM ones): call it before a run starts."""
    problems = [line for e in site.executors
                for line in check_executor(e, source) + fit_problems(e, source) + address_problems(e, source)]
    if problems:
        raise PreflightError("site pre-flight failed:\n  " + "\n  ".join(problems))


def check_fits(site: SiteConfig, source: str) -> None:
    """Only the worker-size check (no SLURM daemon needed for a local site)."""
    problems = [line for e in site.executors for line in fit_problems(e, source)]
    if problems:
        raise PreflightError("site pre-flight failed:\n  " + "\n  ".join(problems))
