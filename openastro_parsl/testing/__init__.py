"""Run a task's ``run`` on in-memory inputs, without a repository, a graph or Parsl.

For task authors' unit tests: ``run_task`` builds the task as the worker-side runner does (validated
Config, the extra keywords ``run`` asks for by name), checks the inputs against the task's connections
before the call and the outputs after it, and returns the outputs::

    from openastro_parsl.testing import run_task

    out = run_task(FrameStatsTask, config={"detect_sigma": 4}, raw=image)
    out = run_task(FieldQaTask, stats=[s1, s2], data_ids={"stats": [{"exposure": 1}, {"exposure": 2}]})

``NoWorkFound`` raised by ``run`` propagates, as it is the task's answer. Toy tasks for tests and benchmarks
are in ``openastro_parsl.testing.toy_tasks``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from ..pipeline.connections import Connection
from ..pipeline.task import PipelineError, PipelineTask, TaskConfig, check_outputs, import_task, run_extras

__all__ = ["run_task"]


def run_task(task_class: type[PipelineTask] | str, /, *, config: TaskConfig | Mapping[str, Any] | None = None,
             data_id: Mapping[str, Any] | None = None, data_ids: Mapping[str, list] | None = None,
             records: Mapping[str, Any] | None = None, checkpoint_dir: str | Path | None = None,
             log: logging.Logger | None = None, **inputs: Any) -> dict[str, Any]:
    """Run ``task_class`` (or its dotted path) on ``inputs`` (one keyword per input connection).

    ``config`` is the task's Config or a mapping of overrides; ``data_id``, ``data_ids`` (connection -> one
    data ID per dataset), ``records`` and ``checkpoint_dir`` are passed on only if ``run`` names them, as the
    runner does. Inputs must match the connections: every input and prerequisite by name, a list for a
    ``multiple`` connection (at least its ``minimum``), one object otherwise. ``PipelineError`` says what does
    not match; a ``run`` that returns other outputs than its connections declare fails as it would on a worker.
    """
    cls = import_task(task_class) if isinstance(task_class, str) else task_class
    cfg = config if isinstance(config, TaskConfig) else cls.Config.model_validate(dict(config or {}))
    conns = cls.connections(cfg)
    _check_inputs(cls.__qualname__, {n: c for n, c in conns.items() if c.kind != "output"}, inputs, data_ids)
    if data_id is not None:
        missing = [d for d in cls.dimensions if d not in data_id]
        if missing:
            raise PipelineError(f"{cls.__qualname__}: data_id {dict(data_id)} lacks the task's dimension(s) "
                                f"{', '.join(missing)}")
    task = cls(cfg, log=log)
    given = {"data_id": data_id, "data_ids": data_ids, "records": records, "checkpoint_dir": checkpoint_dir}
    extras = run_extras(task, **{k: v for k, v in given.items() if v is not None})
    result = task.run(**inputs, **extras)
    return dict(check_outputs(cls.__qualname__, result, [n for n, c in conns.items() if c.kind == "output"]))


def _check_inputs(task: str, expected: dict[str, Connection], inputs: Mapping[str, Any],
                  data_ids: Mapping[str, list] | None) -> None:
    missing, unknown = sorted(set(expected) - set(inputs)), sorted(set(inputs) - set(expected))
    if missing or unknown:
        raise PipelineError(f"{task}: inputs do not match its connections: "
                            + "; ".join(([f"missing {missing}"] if missing else [])
                                        + ([f"no connection named {unknown}"] if unknown else []))
                            + f" (inputs: {', '.join(expected) or 'none'})")
    for name, c in expected.items():
        value = inputs[name]
        if c.multiple:
            if not isinstance(value, (list, tuple)):
                raise PipelineError(f"{task}: input {name!r} is multiple=True: pass a list of datasets, "
                                    f"not {type(value).__name__}")
            if len(value) < c.minimum:
                raise PipelineError(f"{task}: input {name!r} has {len(value)} dataset(s); the planner never "
                                    f"makes a quantum with fewer than minimum={c.minimum}")
        elif isinstance(value, (list, tuple)) and c.storage_class != "StructuredData":
            raise PipelineError(f"{task}: input {name!r} is a single {c.storage_class}: pass one dataset, "
                                f"not a {type(value).__name__}")
    for name, ids in (data_ids or {}).items():
        if name not in expected:
            raise PipelineError(f"{task}: data_ids names {name!r}, which is not an input connection")
        n = len(inputs[name]) if expected[name].multiple else 1
        if len(ids) != n:
            raise PipelineError(f"{task}: data_ids[{name!r}] has {len(ids)} data ID(s) for {n} dataset(s)")
