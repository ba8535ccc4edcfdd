"""The task API: a PipelineTask is a typed Config, Connections, resource hints and a pure ``run``.

``run`` receives Python objects (already read from their files) and returns Python objects; it never sees
the registry, paths or Parsl. That keeps science code testable on its own and lets the runner own I/O.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field

from .connections import Connection, Connections, PipelineError, check_dataset_types
from .moved import current_path

# The keywords the runner gives ``run`` besides its inputs, each only when ``run`` names it (``run_extras``).
RUN_EXTRAS = ("data_id", "data_ids", "records", "checkpoint_dir")


class NoWorkFound(Exception):
    """Raised by ``run`` when its data ID has nothing to do.

    A frame that did not plate-solve, a target with no transit: the quantum ends ``no_work`` with this message
    as its reason, writes no outputs, and is not a failure. Downstream quanta that need its outputs end
    ``no_work`` too; gathering (``multiple``) inputs go on with the datasets that do exist. Not an
    ``OpenAstroError``: it is an outcome, never a user's mistake for a CLI to print.
    """


class TaskConfig(BaseModel):
    """Base of every task's Config: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    connections: dict[str, str | list[str]] = Field(
        default_factory=dict, description="Rename a connection's dataset type: {connection: dataset type}; a regular "
                                          "input may name a list, tried in order per data ID ([postIsrImage, raw]).")


class Resources(BaseModel):
    """What one quantum of the task needs; the site config routes quanta to executors with these."""

    model_config = ConfigDict(extra="forbid")
    cores: int = Field(1, ge=1)
    memory_mb: int = Field(1024, ge=1)
    walltime_min: float = Field(30.0, gt=0)
    executor: str | None = Field(None, description="Executor label to run on (default: routed by resource class).")
    resource_class: str = Field("fast", description="fast | slow | mcmc ... (routing key for site configs)")


class PipelineTask:
    """Subclass with ``dimensions``, ``Config``, ``Connections``, ``resources`` and ``run``."""

    dimensions: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type[TaskConfig]] = TaskConfig
    Connections: ClassVar[type[Connections]] = Connections
    resources: ClassVar[Resources] = Resources()
    # Dimensions whose records related to a quantum's data ID travel with it as ``records[dim]``, a list (a
    # field quantum's targets: ttvFit reads the host's stellar mass there). Own dimensions' records always do.
    related_records: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _check_task(cls)

    def __init__(self, config: TaskConfig | None = None, log: logging.Logger | None = None):
        self.config = config if config is not None else self.Config()
        self.log = log or logging.getLogger(f"openastro.task.{type(self).__name__}")

    def run(self, **inputs: Any) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def resources_for(cls, config: TaskConfig) -> Resources:
        """The resource hint for a configured task (override when config sets e.g. the cores of a pool)."""
        return cls.resources

    @classmethod
    def quantum_where(cls, config: TaskConfig) -> str | None:
        """A where expression every quantum of the configured task must also satisfy.

        '' for no restriction, None for no quanta at all (the task switched off by its config, and left out of
        the plan). For a task that applies to part of the data only (ISR, for the instruments whose frames need
        it): the planner plans no quanta outside it, so a pipeline can hold the task for every repository.
        """
        return ""

    @classmethod
    def connections(cls, config: TaskConfig | None = None) -> dict[str, Connection]:
        """The class's connections with dataset type names renamed by ``config.connections``."""
        conns = cls.Connections.all()
        renames = (config.connections if config is not None else {}) or {}
        unknown = set(renames) - set(conns)
        if unknown:
            raise PipelineError(f"{cls.__name__}: config.connections renames unknown connection(s) {sorted(unknown)}; "
                                f"known: {', '.join(conns)}")
        renamed = {name: (c.renamed(renames[name]) if name in renames else c) for name, c in conns.items()}
        if renames:
            check_dataset_types(f"{cls.__name__} with config.connections {renames}", renamed)
        return renamed


def _check_task(cls: type[PipelineTask]) -> None:
    """Refuse a task whose declaration cannot work, naming the class and connection.

    At import, not on a worker hours into a run. The Connections class has checked each connection already.
    """
    name, dims = cls.__qualname__, cls.dimensions
    if isinstance(dims, str):
        raise PipelineError(f"{name}.dimensions is the string {dims!r}; write a tuple, e.g. ({dims!r},)")
    if not all(isinstance(d, str) and d for d in dims):
        raise PipelineError(f"{name}.dimensions must be dimension names, not {dims!r}")
    if len(set(dims)) != len(tuple(dims)):
        raise PipelineError(f"{name}.dimensions {tuple(dims)!r} name a dimension twice")
    for attr, base in (("Config", TaskConfig), ("Connections", Connections)):
        value = getattr(cls, attr)
        if not (isinstance(value, type) and issubclass(value, base)):
            raise PipelineError(f"{name}.{attr} must be a subclass of {base.__name__}, not {value!r}")
    if not isinstance(cls.resources, Resources):
        raise PipelineError(f"{name}.resources must be a Resources(...), not {cls.resources!r}")
    conns = cls.Connections.all()
    inputs = [n for n, c in conns.items() if c.kind != "output"]
    for conn in conns:
        if conn in RUN_EXTRAS:
            raise PipelineError(f"{name}: connection {conn!r} is named like the runner's own keyword {conn!r} "
                                f"({', '.join(RUN_EXTRAS)}); rename it")
    params = list(inspect.signature(cls.run).parameters.values())[1:]  # without self
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    for conn in inputs:
        if conn not in {p.name for p in params}:
            raise PipelineError(f"{name}.run has no parameter for its input connection {conn!r}")
    for p in params:
        if p.default is p.empty and p.kind is not p.VAR_POSITIONAL and p.name not in inputs + list(RUN_EXTRAS):
            raise PipelineError(f"{name}.run requires {p.name!r}, which is neither one of its input connections "
                                f"({', '.join(inputs) or 'none'}) nor one of {', '.join(RUN_EXTRAS)}")


def import_task(path: str, where: str = "") -> type[PipelineTask]:
    """Import ``package.module.Class``; errors say which pipeline entry asked for it."""
    module_name, _, cls_name = current_path(path).rpartition(".")  # a path of an earlier layout: moved.py
    prefix = f"{where}: " if where else ""
    if not module_name:
        raise PipelineError(f"{prefix}class {path!r} is not a dotted path like package.module.Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PipelineError(f"{prefix}cannot import module {module_name!r} for class {path!r}: {exc}") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise PipelineError(f"{prefix}module {module_name!r} has no class {cls_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, PipelineTask)):
        raise PipelineError(f"{prefix}{path} is not a PipelineTask")
    return cls


def config_hash(config: TaskConfig) -> str:
    """A short stable digest of a config, recorded with every output as provenance."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_extras(task: PipelineTask, **available: Any) -> dict[str, Any]:
    """Those of ``available`` (keywords of ``RUN_EXTRAS``) that ``task.run`` names.

    A task asks for its data ID, its inputs' data IDs, dimension records or a checkpoint folder only when it
    uses them. A checkpoint folder handed over exists. Shared by the runner and ``openastro_parsl.testing``, so
    both call ``run`` alike.
    """
    params = inspect.signature(task.run).parameters
    extras = {k: v for k, v in available.items() if k in RUN_EXTRAS and k in params}
    if extras.get("checkpoint_dir"):
        Path(extras["checkpoint_dir"]).mkdir(parents=True, exist_ok=True)
    return extras


def check_outputs(task: str, result: Any, declared: Iterable[str]) -> Mapping[str, Any]:
    """``result`` of ``task.run``, refused unless it maps exactly the ``declared`` output connections.

    Anything else would register a partial or unexpected set of datasets.
    """
    result = {} if result is None else result
    if not isinstance(result, Mapping):
        raise RuntimeError(f"{task}.run returned a {type(result).__name__}, not a mapping of its outputs")
    expected, got = set(declared), set(result)
    if got != expected:
        raise RuntimeError(f"{task}.run returned outputs {sorted(got)}; its connections declare {sorted(expected)}")
    return result
