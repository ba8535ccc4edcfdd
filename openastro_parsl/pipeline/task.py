"""The task API: a PipelineTask is a typed Config, Connections, resource hints and a pure ``run``.

``run`` receives Python objects (already read from their files) and returns Python objects; it never sees
the registry, paths or Parsl. That keeps science code testable on its own and lets the runner own I/O.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ..errors import OpenAstroError
from .connections import Connection, Connections


class PipelineError(OpenAstroError):
    """A pipeline or task definition is invalid."""


class NoWorkFound(OpenAstroError):
    """Raised by ``run`` when its data ID has nothing to do (a frame that did not plate-solve, a target with no
    transit): the quantum ends ``no_work`` with this message as its reason, writes no outputs, and is not a
    failure. Downstream quanta that need its outputs end ``no_work`` too; gathering (``multiple``) inputs go on
    with the datasets that do exist.
    """


class TaskConfig(BaseModel):
    """Base of every task's Config: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    connections: dict[str, str] = Field(default_factory=dict,
                                        description="Rename a connection's dataset type: {connection: dataset type}.")


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
    def connections(cls, config: TaskConfig | None = None) -> dict[str, Connection]:
        """The class's connections with dataset type names renamed by ``config.connections``."""
        conns = cls.Connections.all()
        renames = (config.connections if config is not None else {}) or {}
        unknown = set(renames) - set(conns)
        if unknown:
            raise PipelineError(f"{cls.__name__}: config.connections renames unknown connection(s) {sorted(unknown)}; "
                                f"known: {', '.join(conns)}")
        return {name: (c.renamed(renames[name]) if name in renames else c) for name, c in conns.items()}


def import_task(path: str, where: str = "") -> type[PipelineTask]:
    """Import ``package.module.Class``; errors say which pipeline entry asked for it."""
    module_name, _, cls_name = path.rpartition(".")
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
