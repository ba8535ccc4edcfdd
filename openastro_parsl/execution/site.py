"""Site configs: YAML describing where quanta run, validated on load, turned into a Parsl Config.

A site lists HighThroughputExecutors, each with a provider (local or SLURM) and the resource classes it
serves; tasks are routed by an explicit executor label or by their resource class (fast / slow / mcmc...).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import OpenAstroError
from ..yamlconfig import load_model

_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")
# Values Parsl pastes into #SBATCH lines or shell commands unquoted: plain tokens only (no space, newline, quote,
# $, backtick, ; or #). A constraint may also use SLURM's operators & | * [ ] ( ).
_TOKEN = re.compile(r"^[A-Za-z0-9_.,+@:-]+$")
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.,+@:&|*\[\]()-]+$")
_SHELL_SAFE_PATH = re.compile(r"^[\w.,+@:=/-]+$")  # \w: letters and digits of any script, and _
LOCAL_STRATEGY_PERIOD_S = 0.1  # Parsl's strategy tick on a site without SLURM (see parsl_config)


class SiteError(OpenAstroError):
    """A site config is invalid or cannot serve a task."""


class ProviderConfig(BaseModel):
    """Where an executor's blocks run (this machine, or SLURM pilot jobs) and how big and long they are."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["local", "slurm"] = "local"
    # SLURM (ignored by local)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes_per_block: int = Field(1, ge=1)
    cores_per_node: int | None = Field(None, ge=1)
    mem_per_node: int | None = Field(None, ge=1, description="GB per node")
    walltime: str = "00:30:00"
    exclusive: bool = False
    scheduler_options: str = Field("", description="Extra #SBATCH lines, verbatim.")
    launcher: Literal["single", "srun"] = "single"
    status_poll_s: int = Field(60, ge=1, le=600, description="Seconds between squeue polls of the blocks: how soon "
                               "an ended pilot job is noticed and replaced (Parsl's own is fixed at 60).")
    # both
    init_blocks: int = Field(1, ge=0)
    min_blocks: int = Field(0, ge=0)
    max_blocks: int = Field(1, ge=1)
    worker_init: str = Field("", description="Shell lines run before workers start (activate the environment).")

    @field_validator("partition", "account", "qos")
    @classmethod
    def _token(cls, v: str | None, info) -> str | None:
        if v is not None and not _TOKEN.match(v):
            raise ValueError(f"{info.field_name} {v!r} must be a plain SLURM name (letters, digits, _ . , + @ : -): "
                             "it is pasted unquoted into an #SBATCH line")
        return v

    @field_validator("constraint")
    @classmethod
    def _constraint(cls, v: str | None) -> str | None:
        if v is not None and not _CONSTRAINT.match(v):
            raise ValueError(f"constraint {v!r} may only hold features and SLURM's operators & | * [ ] ( ) "
                             "(no spaces, quotes, $ or ;): it is pasted unquoted into an #SBATCH line")
        return v

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, v: str) -> str:
        if not _WALLTIME.match(v):
            raise ValueError(f"walltime {v!r} must look like HH:MM:SS or D-HH:MM:SS")
        return v

    @model_validator(mode="after")
    def _blocks(self):
        if self.min_blocks > self.max_blocks:
            raise ValueError(f"min_blocks ({self.min_blocks}) exceeds max_blocks ({self.max_blocks})")
        if self.init_blocks > self.max_blocks:
            raise ValueError(f"init_blocks ({self.init_blocks}) exceeds max_blocks ({self.max_blocks})")
        if self.kind == "slurm" and not self.partition:
            raise ValueError("a slurm provider needs a partition")
        return self

    def walltime_seconds(self) -> int:
        days = 0
        text = self.walltime
        if "-" in text:
            d, text = text.split("-", 1)
            days = int(d)
        h, m, s = (int(x) for x in text.split(":"))
        return ((days * 24 + h) * 60 + m) * 60 + s


class ExecutorConfig(BaseModel):
    """One Parsl HighThroughputExecutor: its provider, its workers and their share, what it serves."""

    model_config = ConfigDict(extra="forbid")
    label: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    provider: ProviderConfig = Field(default_factory=ProviderConfig)
    max_workers_per_node: int | None = Field(None, ge=1)
    cores_per_worker: float = Field(1.0, gt=0)
    mem_per_worker: float | None = Field(None, gt=0, description="GB per worker")
    resource_classes: list[str] = Field(default_factory=list, description="Resource classes routed here.")
    drain_before_walltime_s: int | None = Field(
        None, ge=0, description="Stop giving new quanta to a block this long before its walltime (SLURM).")
    failed_blocks_before_giving_up: int = Field(
        3, ge=1, description="Consecutive blocks that must fail (cancelled, timed out, refused) before the executor "
                             "gives up and fails every quantum; one lost pilot job is replaced by a new one.")
    heartbeat_threshold: int = Field(60, ge=5)
    address: str | None = Field(
        None, description="IP address or host name the workers connect to; the interchange listens on it alone. "
                    "Default: 127.0.0.1 for a local provider, this host's name for SLURM.")
    interface: str | None = Field(
        None, description="Network interface whose address the workers connect to (e.g. ib0), instead of address.")
    encrypted: bool = Field(False, description="Encrypt and authenticate Parsl's worker traffic (CurveZMQ).")

    @field_validator("address", "interface")
    @classmethod
    def _plain(cls, v: str | None, info) -> str | None:
        if v is not None and not _TOKEN.match(v):
            raise ValueError(f"{info.field_name} {v!r} must be a plain host name, IP address or interface name")
        return v

    @model_validator(mode="after")
    def _one_address(self):
        if self.address and self.interface:
            raise ValueError("give address or interface, not both")
        return self


class SiteConfig(BaseModel):
    """A site config (``site_configs/*.yaml``): executors, routing of tasks to them, retries."""

    model_config = ConfigDict(extra="forbid")
    description: str = ""
    executors: list[ExecutorConfig] = Field(min_length=1)
    default_executor: str | None = None
    retries: int = Field(1, ge=0, description="Retries of a quantum lost to an infrastructure failure.")
    max_in_flight: int | None = Field(None, ge=1, description="Quanta submitted to Parsl at once (default: 16 x workers, at least 64).")

    @model_validator(mode="after")
    def _labels(self):
        labels = [e.label for e in self.executors]
        dup = {x for x in labels if labels.count(x) > 1}
        if dup:
            raise ValueError(f"executor labels must be unique; repeated: {sorted(dup)}")
        if self.default_executor and self.default_executor not in labels:
            raise ValueError(f"default_executor {self.default_executor!r} is not one of {labels}")
        return self

    @property
    def default(self) -> str:
        return self.default_executor or self.executors[0].label

    def executor(self, label: str) -> ExecutorConfig:
        for e in self.executors:
            if e.label == label:
                return e
        raise SiteError(f"no executor labelled {label!r}; executors: {', '.join(e.label for e in self.executors)}")

    def route(self, resources: dict) -> str:
        """Executor label for a task with these resource hints."""
        if resources.get("executor"):
            self.executor(resources["executor"])
            return resources["executor"]
        rc = resources.get("resource_class")
        for e in self.executors:
            if rc and rc in e.resource_classes:
                return e.label
        return self.default

    @property
    def uses_slurm(self) -> bool:
        return any(e.provider.kind == "slurm" for e in self.executors)


def load_site(path: str | Path | None) -> tuple[SiteConfig, str]:
    """Load a site config (default: the packaged local one); returns it with the path it came from."""
    if path is None:
        path = Path(__file__).resolve().parents[2] / "site_configs" / "local.yaml"
        if not path.exists():
            return SiteConfig(executors=[ExecutorConfig(label="local")]), "<built-in local>"
    return load_model(SiteConfig, path), str(path)


def check_shell_safe(path: str | Path, what: str = "run directory") -> None:
    """Refuse a path a shell would interpret.

    Parsl pastes the run directory unquoted into shell commands we cannot quote for it (``bash -c '... PATH ...'``,
    ``sbatch PATH``, ``#SBATCH --output=PATH``, the worker command line): a name like ``$(cmd)`` would run ``cmd``, a
    space would break the launch.
    """
    text = os.path.abspath(path)
    if not _SHELL_SAFE_PATH.match(text):
        bad = "".join(sorted({c for c in text if not _SHELL_SAFE_PATH.match(c)}))
        raise SiteError(f"{what} {text!r} holds characters a shell would interpret ({bad!r}); Parsl puts this path "
                        "in its launch commands unquoted, so use a path of letters, digits and _ . , + @ : = / -")


def worker_address(e: ExecutorConfig) -> str:
    """The one address the interchange listens on and the workers connect to.

    Loopback for a local provider (nothing else on the network can reach it), else the configured address or interface,
    else this host's name. Listening on all interfaces would expose the workers' task port to every network of the host.
    """
    try:
        if e.interface:
            from parsl.addresses import address_by_interface

            return address_by_interface(e.interface)
        if e.address:
            try:
                return str(ipaddress.ip_address(e.address))
            except ValueError:
                return socket.gethostbyname(e.address)
        if e.provider.kind == "local":
            return "127.0.0.1"
        from parsl.addresses import address_by_hostname

        return address_by_hostname()
    except OSError as exc:
        what = f"interface {e.interface!r}" if e.interface else f"address {e.address or socket.gethostname()!r}"
        raise SiteError(f"executor {e.label!r}: cannot find the {what}: {exc}; set executors[].address or "
                        "interface to one the workers can reach") from None


def workers_per_node(e: ExecutorConfig, quanta: int | None = None) -> int | None:
    """Workers a block of this executor starts (None: one per core, Parsl's choice).

    A local block for a graph of fewer quanta than cores starts only as many: every worker is an interpreter
    that imports Parsl as it starts, and on a small machine the idle ones would delay the one that gets the
    first quantum.
    """
    if quanta is None or e.provider.kind != "local":
        return e.max_workers_per_node
    return max(1, min(e.max_workers_per_node or os.cpu_count() or 1, quanta))


def parsl_config(site: SiteConfig, run_dir: Path, quanta: int | None = None):
    """The Parsl Config for a site: one HighThroughputExecutor per executor entry.

    ``quanta``: how many quanta the run can hand over at most, when that is known (see ``workers_per_node``).
    """
    from functools import partial

    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.jobs.error_handlers import windowed_error_handler
    from parsl.launchers import SingleNodeLauncher, SrunLauncher
    from parsl.providers import LocalProvider, SlurmProvider
    from parsl.providers.base import ExecutionProvider

    check_shell_safe(run_dir)
    executors = []
    for e in site.executors:
        p = e.provider
        provider: ExecutionProvider
        if p.kind == "local":
            provider = LocalProvider(init_blocks=p.init_blocks, min_blocks=p.min_blocks, max_blocks=p.max_blocks,
                                     worker_init=p.worker_init)
        else:
            provider = _polled_slurm_provider(SlurmProvider)(
                p.status_poll_s, partition=p.partition, account=p.account, qos=p.qos, constraint=p.constraint,
                nodes_per_block=p.nodes_per_block, cores_per_node=p.cores_per_node, mem_per_node=p.mem_per_node,
                init_blocks=p.init_blocks, min_blocks=p.min_blocks, max_blocks=p.max_blocks, walltime=p.walltime,
                scheduler_options=p.scheduler_options, worker_init=p.worker_init, exclusive=p.exclusive,
                launcher=SrunLauncher() if p.launcher == "srun" else SingleNodeLauncher())
        drain = None
        if e.drain_before_walltime_s is not None and p.kind == "slurm":
            drain = max(30, p.walltime_seconds() - e.drain_before_walltime_s)
        executors.append(HighThroughputExecutor(
            label=e.label, provider=provider, launch_cmd=_local_launch_cmd() if p.kind == "local" and not p.worker_init else None,
            max_workers_per_node=workers_per_node(e, quanta),
            cores_per_worker=e.cores_per_worker, mem_per_worker=e.mem_per_worker,
            heartbeat_threshold=e.heartbeat_threshold, heartbeat_period=max(2, e.heartbeat_threshold // 4),
            drain_period=drain,
            block_error_handler=partial(windowed_error_handler, threshold=e.failed_blocks_before_giving_up),
            worker_logdir_root=str(run_dir / "parsl_workers"), poll_period=10,
            address=worker_address(e), loopback_address="127.0.0.1", encrypted=e.encrypted))
    _parsl_logging(run_dir / "parsl")
    # Parsl launches the init_blocks at the strategy's second tick (its first runs before the executors exist), so
    # a local block would wait up to strategy_period before starting. A tick is cheap (counts in this process;
    # providers are polled at their own interval), so local sites tick fast; SLURM blocks wait in a queue anyway.
    return Config(executors=executors, run_dir=str(run_dir / "parsl"), retries=0, strategy="simple",
                  strategy_period=2 if site.uses_slurm else LOCAL_STRATEGY_PERIOD_S, initialize_logging=False,
                  usage_tracking=0)


def _polled_slurm_provider(base):
    """SlurmProvider with the site's squeue interval.

    Parsl polls every 60 s, so a block that ended (walltime, scancel, drain) waited up to a minute for its
    replacement; a small cluster or a test node can ask sooner.
    """

    class PolledSlurmProvider(base):  # type: ignore[misc,valid-type]  # base: parsl SlurmProvider, imported late
        def __init__(self, status_poll_s: int, **kwargs):
            super().__init__(**kwargs)
            self._status_poll_s = status_poll_s

        @property
        def status_polling_interval(self) -> int:
            return self._status_poll_s

    return PolledSlurmProvider


def _local_launch_cmd() -> str | None:
    """Parsl's worker-pool command, run by this interpreter as ``-m openastro_parsl.execution.process_worker_pool``.

    Not the first ``process_worker_pool.py`` on PATH: that may be a version manager's shim (pyenv's costs a shell
    and a ``pyenv exec`` per block) or another environment's Parsl. The module runs Parsl's own script, with
    Parsl imported lean in the pool and in every process it spawns (see that module). Only for local blocks
    without a ``worker_init`` (which may activate another environment on purpose); None (Parsl's default) when
    the interpreter's path holds characters a shell would interpret.
    """
    import sys

    from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD

    head = "process_worker_pool.py "
    if not DEFAULT_LAUNCH_CMD.startswith(head) or not _SHELL_SAFE_PATH.match(sys.executable):
        return None
    return f"{sys.executable} -m {__package__}.process_worker_pool " + DEFAULT_LAUNCH_CMD[len(head):]


class _QuietFileHandler(logging.FileHandler):
    """Parsl's log file, which drops a record it cannot write (a full disk) rather than print a traceback.

    The terminal would otherwise get a traceback for every record; the run reports the full disk once, itself.
    """

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def _parsl_logging(directory: Path) -> None:
    """Parsl's own log at INFO in the run directory.

    Its default is DEBUG, which costs the submit loop several log records per task: at thousands of quanta a minute, a
    visible share of its time.
    """
    import logging

    directory.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("parsl")
    for h in list(logger.handlers):
        if getattr(h, "_openastro", False):
            logger.removeHandler(h)
            h.close()
    handler = _QuietFileHandler(directory / "parsl.log")
    handler._openastro = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s:%(lineno)d %(processName)s %(threadName)s "
                                           "%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
