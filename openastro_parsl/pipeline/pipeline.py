"""Pipeline YAML -> an ordered list of configured tasks.

A pipeline file names tasks by label with their class and config, groups labels into subsets (steps), and
may import other pipeline files. ``file.yaml#step1,label`` selects part of it; ``-c label:key=value`` and
``-C label:file.yaml`` override config from the command line. Every error names the file and key (and the
line, where YAML gives it) or the override that caused it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import networkx as nx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..yamlconfig import describe_validation_error, load_yaml, validate
from .connections import Connection
from .moved import current_path
from .task import PipelineError, PipelineTask, TaskConfig, config_hash, import_task


class _Import(BaseModel):
    model_config = ConfigDict(extra="forbid")
    location: str
    exclude: list[str] = Field(default_factory=list)
    include: list[str] | None = None


class _TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    class_: str = Field(alias="class")
    config: dict[str, Any] = Field(default_factory=dict)


class _Subset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subset: list[str]
    description: str = ""


class _PipelineFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    imports: list[Union[str, _Import]] = Field(default_factory=list)
    tasks: dict[str, Union[str, _TaskEntry]] = Field(default_factory=dict)
    subsets: dict[str, Union[list[str], _Subset]] = Field(default_factory=dict)


@dataclass
class TaskDef:
    """One configured task of a pipeline."""

    label: str
    class_path: str
    task_class: type[PipelineTask]
    config: TaskConfig
    connections: dict[str, Connection]

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(self.task_class.dimensions)

    @property
    def resources(self):
        return self.task_class.resources_for(self.config)

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    @property
    def quantum_where(self) -> str | None:
        """The task's own restriction of its quanta (``PipelineTask.quantum_where``): '' none, None no quanta."""
        return self.task_class.quantum_where(self.config)

    def inputs(self) -> list[Connection]:
        return [c for c in self.connections.values() if c.kind == "input"]

    def prerequisites(self) -> list[Connection]:
        return [c for c in self.connections.values() if c.kind == "prerequisite"]

    def outputs(self) -> list[Connection]:
        return [c for c in self.connections.values() if c.kind == "output"]


@dataclass
class _RawTask:
    class_path: str
    config: dict[str, Any]
    source: str           # file the entry came from
    lines: dict[tuple, int]
    label_line: int | None


@dataclass
class Pipeline:
    """Configured tasks in dataflow order, with the file's subsets; what the planner expands."""

    description: str
    tasks: list[TaskDef]
    subsets: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""

    def __iter__(self):
        return iter(self.tasks)

    def __len__(self):
        return len(self.tasks)

    def task(self, label: str) -> TaskDef:
        for t in self.tasks:
            if t.label == label:
                return t
        raise PipelineError(f"{self.source}: no task labelled {label!r}; labels: {', '.join(t.label for t in self.tasks)}")

    def producers(self) -> dict[str, TaskDef]:
        return {c.dataset_type: t for t in self.tasks for c in t.outputs()}

    def overall_inputs(self) -> dict[str, Connection]:
        """Regular inputs no task in this pipeline produces: they must come from the input collections."""
        produced = self.producers()
        out: dict[str, Connection] = {}
        for t in self.tasks:
            for c in t.inputs():
                for name in c.dataset_types:  # alternatives too: a data ID may find only the last
                    if name not in produced:
                        out.setdefault(name, c if name == c.dataset_type else c.renamed(name))
        return out


def _read_file(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, _RawTask], dict[str, list[str]], str]:
    path = path.resolve()
    if path in seen:
        raise PipelineError(f"pipeline imports form a cycle: {' -> '.join(str(p) for p in seen + (path,))}")
    try:
        text = path.read_text()
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read pipeline: {exc.strerror}") from None
    data, lines = load_yaml(text, str(path))
    spec = validate(_PipelineFile, data, str(path), lines)
    tasks: dict[str, _RawTask] = {}
    subsets: dict[str, list[str]] = {}
    for imp in spec.imports:
        imp = _Import(location=imp) if isinstance(imp, str) else imp
        location = (path.parent / imp.location) if not Path(imp.location).is_absolute() else Path(imp.location)
        sub_tasks, sub_subsets, _ = _read_file(location, seen + (path,))
        unknown = set(imp.exclude) - set(sub_tasks)
        if unknown:
            raise PipelineError(f"{path}: imports.exclude names labels not in {location}: {sorted(unknown)}")
        keep = set(imp.include) if imp.include is not None else set(sub_tasks)
        for label, raw in sub_tasks.items():
            if label in keep and label not in imp.exclude:
                tasks[label] = raw
        for name, labels in sub_subsets.items():
            kept = [x for x in labels if x in tasks]
            if kept:
                subsets[name] = kept
    for label, entry in spec.tasks.items():
        entry = _TaskEntry(**{"class": entry}) if isinstance(entry, str) else entry
        if label in tasks:  # a local entry refines an imported one: same label, local config on top
            base = tasks[label]
            same = current_path(base.class_path) == current_path(entry.class_)  # old and new paths alike
            config = copy.deepcopy(base.config) if same else {}
            _merge(config, entry.config)
        else:
            config = copy.deepcopy(entry.config)
        task_lines = {k[3:]: v for k, v in lines.items() if k[:3] == ("tasks", label, "config")}
        tasks[label] = _RawTask(entry.class_, config, str(path), task_lines, lines.get(("tasks", label)))
    for name, sub in spec.subsets.items():
        labels = sub if isinstance(sub, list) else sub.subset
        missing = [x for x in labels if x not in tasks]
        if missing:
            line = lines.get(("subsets", name), "?")
            raise PipelineError(f"{path}:{line}: subset {name!r} names unknown task(s) {missing}; "
                                f"tasks: {', '.join(tasks)}")
        if name in tasks:
            raise PipelineError(f"{path}: subset {name!r} has the same name as a task label")
        subsets[name] = list(labels)
    return tasks, subsets, spec.description


def _merge(base: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)


def _set_dotted(config: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = config
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise PipelineError(f"cannot set {key}: {p} is not a mapping")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, str, Any]:
    """``label:key=value`` -> (label, key, YAML-parsed value)."""
    if ":" not in text or "=" not in text.split(":", 1)[1]:
        raise PipelineError(f"config override {text!r} is not label:key=value")
    label, rest = text.split(":", 1)
    key, value = rest.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return label.strip(), key.strip(), parsed


def load_pipeline(spec: str | Path, overrides: list[str] | tuple[str, ...] = (),
                  override_files: list[str] | tuple[str, ...] = ()) -> Pipeline:
    """Load ``file.yaml[#subset,label,...]`` and apply ``-c`` / ``-C`` overrides; tasks come out in run order."""
    spec = str(spec)
    path_text, _, selector = spec.partition("#")
    path = Path(path_text)
    raw_tasks, subsets, description = _read_file(path)
    if selector:
        labels: list[str] = []
        for name in [s.strip() for s in selector.split(",") if s.strip()]:
            if name in subsets:
                labels.extend(x for x in subsets[name] if x not in labels)
            elif name in raw_tasks:
                if name not in labels:
                    labels.append(name)
            else:
                raise PipelineError(f"{path}: #{selector}: {name!r} is neither a subset ({', '.join(subsets) or 'none'}) "
                                    f"nor a task label ({', '.join(raw_tasks)})")
        raw_tasks = {k: v for k, v in raw_tasks.items() if k in labels}

    extra: dict[str, list[tuple[str, Any, str]]] = {}  # label -> (key, value, where it came from)
    for text in overrides:
        label, key, value = parse_override(text)
        if label not in raw_tasks:
            raise PipelineError(f"-c {text}: no task labelled {label!r} in this pipeline; labels: {', '.join(raw_tasks)}")
        extra.setdefault(label, []).append((key, value, f"-c {text}"))
    for text in override_files:
        if ":" not in text:
            raise PipelineError(f"-C {text!r} is not label:file.yaml")
        label, file = text.split(":", 1)
        if label not in raw_tasks:
            raise PipelineError(f"-C {text}: no task labelled {label!r} in this pipeline; labels: {', '.join(raw_tasks)}")
        data, _ = load_yaml(Path(file).read_text() if Path(file).exists() else _missing(file), file)
        if not isinstance(data, dict):
            raise PipelineError(f"{file}: a config override file must be a mapping of key: value")
        for key, value in data.items():
            extra.setdefault(label, []).append((key, value, f"-C {text}"))

    defs: list[TaskDef] = []
    for label, raw in raw_tasks.items():
        where = f"{raw.source}:{raw.label_line or '?'}: task {label!r}"
        cls = import_task(raw.class_path, where)
        config_dict = copy.deepcopy(raw.config)
        try:
            config = cls.Config.model_validate(config_dict)
        except ValidationError as exc:
            msg = describe_validation_error(exc, raw.source, {(): raw.label_line or 0, **raw.lines})
            raise PipelineError(f"task {label!r} ({raw.class_path}) config:\n{msg}") from None
        for key, value, origin in extra.get(label, []):
            trial = config.model_dump()
            _set_dotted(trial, key, value)
            try:
                config = cls.Config.model_validate(trial)
            except ValidationError as exc:
                msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}"
                                for e in exc.errors())
                fields = ", ".join(cls.Config.model_fields)
                raise PipelineError(f"{origin}: {msg} (config fields of {label}: {fields})") from None
        try:
            conns = cls.connections(config)
        except PipelineError as exc:
            raise PipelineError(f"{where}: {exc}") from None
        defs.append(TaskDef(label, raw.class_path, cls, config, conns))
    pipeline = Pipeline(description, _order(defs, str(path)), {k: v for k, v in subsets.items()}, str(path))
    return pipeline


def _missing(file: str) -> str:
    raise PipelineError(f"{file}: config override file does not exist")


def _order(defs: list[TaskDef], source: str) -> list[TaskDef]:
    """Tasks in dataflow order; two producers of one dataset type or a cycle are errors."""
    producer: dict[str, str] = {}
    for t in defs:
        for c in t.outputs():
            if c.dataset_type in producer:
                raise PipelineError(f"{source}: dataset type {c.dataset_type!r} is produced by both "
                                    f"{producer[c.dataset_type]!r} and {t.label!r}")
            producer[c.dataset_type] = t.label
    g: nx.DiGraph[str] = nx.DiGraph()
    index = {t.label: i for i, t in enumerate(defs)}
    for t in defs:
        g.add_node(t.label)
        for c in t.inputs() + t.prerequisites():
            for name in c.dataset_types:
                if name in producer:
                    if c.kind == "prerequisite":
                        raise PipelineError(f"{source}: task {t.label!r} takes {name!r} as a prerequisite "
                                            f"input, but task {producer[name]!r} produces it; make it a regular input")
                    g.add_edge(producer[name], t.label)
    try:
        order = list(nx.lexicographical_topological_sort(g, key=index.__getitem__))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(g)
        raise PipelineError(f"{source}: tasks form a cycle: {' -> '.join([a for a, _ in cycle] + [cycle[0][0]])}") from None
    by_label = {t.label: t for t in defs}
    return [by_label[x] for x in order]
