"""The local single-node SLURM cluster (``bin/slurm-local``) and a few read-only SLURM queries.

``bin/slurm-local start`` brings up munged, MariaDB + slurmdbd (so ``sacct`` works), slurmctld and slurmd under
one folder (default ``$OPENASTRO_SLURM_DIR`` or /tmp/openastro-slurm), with one partition ``debug``
(MaxTime 02:00:00) sized to this machine, and links /etc/slurm/slurm.conf to its config so ``sbatch`` & co. --
and Parsl's SlurmProvider -- find it without SLURM_CONF.  This module runs that script; SLURM queries live in
``slurm.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from .slurm import job_state, parse_time, partition_info  # noqa: F401 - re-exported for the tests and users

PARTITION = "debug"
DEFAULT_DIR = "/tmp/openastro-slurm"


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be started or reached here; ``str()`` is the one-line reason."""


def script() -> Path:
    """bin/slurm-local of this checkout (the package is installed in develop mode)."""
    path = Path(__file__).resolve().parents[2] / "bin" / "slurm-local"
    if not path.is_file():
        raise SlurmUnavailable(f"{path} not found: bin/slurm-local comes with a checkout of openastro-parsl")
    return path


def slurm_dir(directory: str | os.PathLike | None = None) -> Path:
    """The local cluster's folder: ``directory``, else ``$OPENASTRO_SLURM_DIR``, else /tmp/openastro-slurm."""
    return Path(directory or os.environ.get("OPENASTRO_SLURM_DIR") or DEFAULT_DIR)


def _run_script(command: str, directory, timeout: float) -> subprocess.CompletedProcess:
    args = ["bash", str(script()), command, "--dir", str(slurm_dir(directory))]
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"bin/slurm-local {command} took more than {timeout:.0f} s") from None


def parse_env(text: str) -> dict[str, str]:
    """The ``export NAME=value`` lines that bin/slurm-local prints."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^export (\w+)=(.*)$", text, re.M)}


def start(directory: str | os.PathLike | None = None, timeout: float = 600) -> dict[str, str]:
    """Start the local cluster (idempotent; installs Debian's packages the first time) and return its env.

    The env holds SLURM_CONF, OPENASTRO_SLURM_PARTITION, OPENASTRO_SLURM_MAX_WALLTIME and OPENASTRO_SLURM_SACCT
    ("1" when sacct works).  Raises SlurmUnavailable with the script's one-line reason when SLURM can't run here.
    """
    proc = _run_script("start", directory, timeout)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "cannot start SLURM" in line), lines[-1] if lines else "")
        reason = reason.split("cannot start SLURM: ", 1)[-1] or f"bin/slurm-local start exited {proc.returncode}"
        raise SlurmUnavailable(reason)
    return parse_env(proc.stdout)


def stop(directory: str | os.PathLike | None = None, timeout: float = 180) -> None:
    """Stop the local cluster's daemons (by their pid files)."""
    proc = _run_script("stop", directory, timeout)
    if proc.returncode != 0:
        raise SlurmUnavailable(proc.stderr.strip() or f"bin/slurm-local stop exited {proc.returncode}")


def is_up(directory: str | os.PathLike | None = None) -> bool:
    """Whether the local cluster is up and answering (``bin/slurm-local status``)."""
    try:
        return _run_script("status", directory, 60).returncode == 0
    except SlurmUnavailable:
        return False


def partition_max_walltime_s(partition: str = PARTITION) -> int | None:
    """The partition's MaxTime in seconds (None when UNLIMITED): a site's walltime must not exceed it."""
    info = partition_info(partition)
    if info is None:
        raise SlurmUnavailable(f"scontrol does not know partition {partition!r}: is the local SLURM up?")
    return parse_time(info["MaxTime"])
