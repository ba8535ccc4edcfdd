"""Pre-flight checks of a SLURM site before anything is submitted: one clear line per problem.

A typo in a partition name otherwise shows up as Parsl retrying sbatch in a loop, minutes into a run.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from ..errors import OpenAstroError
from .site import ExecutorConfig, SiteConfig


class PreflightError(OpenAstroError):
    """The site cannot run anything as configured."""


def _run(cmd: list[str], timeout: float = 20) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, (p.stdout + p.stderr).strip()
    except FileNotFoundError:
        return 127, f"{cmd[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(cmd)} timed out after {timeout:.0f} s"


def parse_time(text: str) -> int | None:
    """SLURM time (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, UNLIMITED) in seconds; None = unlimited."""
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE", "NONE", ""):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
        parts = [int(x) for x in text.split(":")] + [0] * (3 - len(text.split(":")))
        h, m, s = parts[:3]
    else:
        parts = [int(x) for x in text.split(":")]
        if len(parts) == 1:
            h, m, s = 0, parts[0], 0
        elif len(parts) == 2:
            h, m, s = 0, parts[0], parts[1]
        else:
            h, m, s = parts
    return ((days * 24 + h) * 60 + m) * 60 + s


def partition_info(name: str) -> dict[str, str] | None:
    code, out = _run(["scontrol", "show", "partition", name, "--oneliner"])
    if code != 0 or not out or "not found" in out.lower() or "invalid partition" in out.lower():
        return None
    return dict(re.findall(r"(\S+?)=(\S+)", out))


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
        code, out = _run(["sinfo", "-h", "-o", "%P"])
        known = ", ".join(x.rstrip("*") for x in out.split()) if code == 0 else "unknown (sinfo failed)"
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
