"""The planner: pipeline + registry -> quantum graph, with every problem found before anything runs.

Planning is relational and done in memory: each input dataset type is read from the registry in one query,
quantum data IDs come from hash joins of the inputs' data IDs (and dimension records for dimensions no input
carries, such as the targets in a field), and inputs are attached through dictionaries keyed by the shared
dimension values. No per-quantum query, so the cost grows linearly with the number of quanta.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from itertools import repeat, starmap
from operator import itemgetter
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from ..butler import Butler
from ..datastore.datastore import dataset_relpaths, run_relpath
from ..errors import OpenAstroError
from ..pipeline.pipeline import Pipeline, TaskDef
from ..registry.calibs import NIGHT_DIMENSION, ValidityIndex, certified
from ..registry.names import validate_collection_name
from ..registry.refs import CollectionType, DatasetRef, DatasetType
from ..registry.where import evaluate_where, parse_where, referenced_identifiers
from .quantum_graph import (
    DatasetNode,
    Quantum,
    QuantumGraph,
    TaskInfo,
    dataset_uuids,
    paused_gc,
    quantum_uuids,
)


class PlanningError(OpenAstroError):
    """The graph cannot be built; the message lists every reason found."""


@dataclass
class _Available:
    """Datasets of one type the planner can feed to tasks (existing or predicted), indexed lazily."""

    nodes: list[DatasetNode] = field(default_factory=list)
    where_applied: bool = False
    _index: dict[tuple[str, ...], dict[tuple, list[DatasetNode]]] = field(default_factory=dict)

    def index(self, dims: tuple[str, ...]) -> dict[tuple, list[DatasetNode]]:
        idx = self._index.get(dims)
        if idx is None:
            idx = defaultdict(list)
            try:
                keys = list(map(_tuple_getter(dims), [n.data_id for n in self.nodes]))
            except KeyError:  # a data ID without some implied value
                keys = [tuple(map(n.data_id.get, dims)) for n in self.nodes]
            for key, n in zip(keys, self.nodes, strict=True):
                idx[key].append(n)
            self._index[dims] = idx
        return idx


@dataclass
class TaskReport:
    """Why a task got the quanta it got: for `--explain` and the empty-graph error."""

    label: str
    candidates: int = 0
    dropped_by_where: int = 0
    dropped_missing: dict[str, int] = field(default_factory=dict)
    skipped_existing: int = 0
    quanta: int = 0
    no_input: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _MissingPrereq:
    """A prerequisite a quantum lacks; those of one data ID (several tasks) become one line of the error."""

    dataset_type: str
    data_id: tuple[tuple[str, Any], ...]
    task: str
    problem: str
    hint: str = ""


class _OutputSpec(NamedTuple):
    """What every quantum of a task needs to predict one of its outputs, worked out once per task."""

    name: str                    # connection
    dataset_type: str
    dims: tuple[str, ...]        # of its data ID, in order
    key_dims: tuple[str, ...] | None   # of its data ID key; None: the quantum's key is it
    same_id: bool                # its data ID is the quantum's
    formatter: str
    path_dims: tuple[str, ...]   # the data ID values its path is made of
    extension: str
    in_skip: dict[str, DatasetRef]     # found in --skip-existing-in, by data ID key
    in_output: dict[str, DatasetRef]   # already in the output run, by data ID key
    available: list[DatasetNode]       # where later tasks find it


class _OutputColumn(NamedTuple):
    """One output of every quantum of a task, predicted (in the order of the quanta)."""

    keys: list[str]              # data ID keys
    nodes: list[DatasetNode]


def _key_template(dims: Sequence[str]) -> str:
    return ",".join(d.replace("{", "{{").replace("}", "}}") + "={}" for d in dims)


def _key_maker(dims: Sequence[str]) -> Callable[[Mapping[str, Any]], str]:
    """``lambda data_id: universe.data_id_key(dims, data_id)`` with the text around the values made once."""
    if not dims:
        return lambda data_id: ""
    template = _key_template(dims)
    values = itemgetter(*dims)
    if len(dims) == 1:
        return lambda data_id: template.format(values(data_id))
    return lambda data_id: template.format(*values(data_id))


def _keys(dims: Sequence[str], data_ids: Sequence[Mapping[str, Any]]) -> list[str]:
    """``list(map(_key_maker(dims), data_ids))`` with no Python call per data ID."""
    if not dims:
        return [""] * len(data_ids)
    template = _key_template(dims)
    if len(dims) == 1:
        return list(map(template.format, map(itemgetter(dims[0]), data_ids)))
    return list(starmap(template.format, map(itemgetter(*dims), data_ids)))


def _tuple_getter(dims: Sequence[Any]) -> Callable[[Any], tuple]:
    """``lambda row: tuple(row[d] for d in dims)``, as fast as operator.itemgetter makes it.

    ``dims`` are a dict's keys, or positions in a tuple (the planner's join rows).
    """
    if not dims:
        return lambda row: ()
    if len(dims) == 1:
        d = dims[0]
        return lambda row: (row[d],)
    return itemgetter(*dims)


def _one(value: Any) -> list:
    return [value]


def _output_column(run: str, spec: _OutputSpec, data_ids: list[dict], keys: list[str]) -> _OutputColumn:
    """One output of every quantum: data IDs (the quantum's own, or its subset), keys, dataset IDs, paths, nodes."""
    if spec.same_id:
        oids = list(map(dict.copy, data_ids))
    else:
        oids = list(map(dict, map(zip, repeat(spec.dims), map(_tuple_getter(spec.dims), data_ids))))
    okeys = keys if spec.key_dims is None else _keys(spec.key_dims, oids)
    ids = dataset_uuids(run, spec.dataset_type, okeys)
    paths = dataset_relpaths(run, spec.dataset_type, spec.path_dims, oids, spec.extension)
    nodes = list(map(DatasetNode, ids, repeat(spec.dataset_type), oids, repeat(run), paths, repeat(spec.formatter),
                     repeat(None), repeat(False)))
    return _OutputColumn(okeys, nodes)


def _outputs_of(names: list[str], columns: list[_OutputColumn], n: int) -> list[dict[str, list[str]]]:
    """Each quantum's ``{connection: [dataset id]}``."""
    if not names:
        return [{} for _ in range(n)]
    if len(names) == 1:
        name = names[0]
        return [{name: [node.id]} for node in columns[0].nodes]
    return [dict(zip(names, map(_one, row), strict=True))
            for row in zip(*([node.id for node in col.nodes] for col in columns), strict=True)]


def _input_ids(inputs: dict[str, list[DatasetNode]], ids_of: dict[int, list[str]],
               datasets: dict[str, DatasetNode]) -> dict[str, list[str]]:
    """A quantum's ``{connection: [dataset id]}``; its input nodes join ``datasets`` (once each)."""
    q_in = {}
    for name, ds in inputs.items():
        ids = ids_of.get(id(ds))
        if ids is None:
            ids = ids_of[id(ds)] = [d.id for d in ds]
            for d in ds:
                if d.id not in datasets:
                    datasets[d.id] = d
        q_in[name] = ids.copy()
    return q_in


class _Blank(dict):
    """Format values for a hint: a placeholder the data ID does not fill stays as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _missing_lines(missing: Sequence[str | _MissingPrereq], repo: str) -> list[str]:
    """One line per missing dataset (naming every task that needs it, then the connection's hint), in order."""
    groups: dict[Any, list[str]] = {}
    hints: dict[Any, str] = {}
    for m in missing:
        key = m if isinstance(m, str) else (m.dataset_type, m.data_id, m.problem)
        tasks = groups.setdefault(key, [])
        if isinstance(m, _MissingPrereq):
            if m.task not in tasks:
                tasks.append(m.task)
            hints[key] = hints.get(key) or m.hint  # tasks of one dataset type share a hint; the first one given
    lines = []
    for key, tasks in groups.items():
        if isinstance(key, str):
            lines.append(key)
            continue
        dataset_type, data_id, problem = key
        hint = hints.get(key, "")
        ident = ", ".join(f"{d}={v!r}" for d, v in data_id)
        who = f"task {tasks[0]!r}" if len(tasks) == 1 else "tasks " + ", ".join(repr(t) for t in tasks)
        line = f"{dataset_type} {{{ident}}} needed by {who}: {problem}"
        if hint:
            line += "; " + hint.format_map(_Blank({**{d: v for d, v in data_id}, "repo": repo}))
        lines.append(line)
    return lines


class Planner:
    """Builds the quantum graph of a pipeline over what the registry holds, checking it before anything runs."""

    def __init__(self, butler: Butler, pipeline: Pipeline, *, inputs: Sequence[str], output_run: str,
                 where: str = "", binds: Mapping[str, Any] | None = None,
                 skip_existing_in: Sequence[str] = (), clobber_outputs: bool = False, pipeline_spec: str = ""):
        self.butler = butler
        self.registry = butler.registry
        self.universe = butler.universe
        self.pipeline = pipeline
        self.inputs = [c for c in inputs if c]
        self.output_run = output_run
        self.where = where or ""
        self.binds = dict(binds or {})
        self.skip_existing_in = list(skip_existing_in)
        self.clobber = clobber_outputs
        self.pipeline_spec = pipeline_spec
        self.node = parse_where(self.where)
        self.where_dims = {d for d, _ in referenced_identifiers(self.node, self.binds)} if self.node else set()
        self.reports: dict[str, TaskReport] = {}
        self._records: dict[str, dict[tuple, dict]] = {}
        self._calib_cache: dict[tuple, ValidityIndex] = {}  # (dataset type, shared dims) -> certified, by night

    # -- helpers ------------------------------------------------------------------------------
    def _records_of(self, dim: str) -> dict[tuple, dict]:
        """All records of a dimension keyed by their identifying values (loaded once)."""
        if dim not in self._records:
            d = self.universe[dim]
            keys = self.universe.required([dim])
            rows = self.registry.dimension_records(dim)
            # plain str keys: SQLAlchemy's column names (quoted_name) would make every worker that unpickles a
            # quantum's records import SQLAlchemy, and pickle slower
            plain = all(type(k) is str for k in rows[0]) if rows else True
            names = [str(k) for k in rows[0]] if rows else []
            if not plain:
                rows = [dict(zip(names, row.values(), strict=True)) for row in rows]
            key_name = d.key_name
            for r in rows:  # the registry's rows are new dicts, ours to complete
                r[dim] = r[key_name]
            self._records[dim] = dict(zip(map(_tuple_getter(keys), rows), rows, strict=True))
        return self._records[dim]

    def _where_ok(self, data_id: Mapping[str, Any], node: Any = None) -> bool:
        def values(dim: str, attr: str | None):
            if attr is None or attr == self.universe[dim].key_name:
                return data_id.get(dim)
            key = tuple(data_id.get(k) for k in self.universe.required([dim]))
            rec = self._records_of(dim).get(key)
            return None if rec is None else rec.get(attr)

        return evaluate_where(self.node if node is None else node, values, self.binds)

    def _check_dataset_types(self) -> dict[str, DatasetType]:
        """Every dataset type used agrees across tasks and with the registry; problems name the task."""
        seen: dict[str, tuple[DatasetType, str]] = {}
        problems = []
        for t in self.pipeline:
            for c in t.connections.values():
                for name in c.dataset_types:  # an input's alternatives are checked alike
                    dt = DatasetType(name, self.universe.sorted(c.dimensions), c.storage_class)
                    if name in seen and seen[name][0] != dt:
                        other, who = seen[name]
                        problems.append(f"task {t.label!r} connection {c.name!r} declares {dt.describe()} but task "
                                        f"{who!r} declares {other.describe()}")
                        continue
                    seen.setdefault(name, (dt, t.label))
                    registered = self.registry.get_dataset_type(name, missing_ok=True)
                    if registered is not None and registered != dt:
                        problems.append(f"task {t.label!r} connection {c.name!r} declares {dt.describe()} but the registry "
                                        f"has {registered.describe()}")
            extra = set(self.universe.expanded(t.dimensions))
            for c in t.outputs():
                if not set(c.dimensions) <= extra:
                    problems.append(f"task {t.label!r} output {c.name!r} has dimensions {list(c.dimensions)} beyond "
                                    f"the task's {list(t.dimensions)}")
        if problems:
            raise PlanningError("dataset type conflicts:\n  " + "\n  ".join(problems))
        return {k: v[0] for k, v in seen.items()}

    def _check_names(self) -> None:
        """A new output run must follow the name grammar before anything is made for it.

        A collection that does not exist gets the grammar's reason when that is why (existing names are read as they
        are).
        """
        if not self.registry.has_collection(self.output_run):
            validate_collection_name(self.output_run, "output run")
        for name in self.inputs + self.skip_existing_in:
            if not self.registry.has_collection(name):
                validate_collection_name(name, "input collection")

    def _check_paths_free(self, datasets: dict[str, DatasetNode], quanta: dict[str, Quantum]) -> None:
        """No planned output may land on a file registered to another dataset.

        Such a file (say, of a run whose name mapped to the same folder before names were checked) would be overwritten
        before any registry could refuse it. One range query over the output run's folder.
        """
        taken = self.registry.registered_paths_under(run_relpath(self.output_run))
        if not taken:
            return
        problems: list[str] = []
        for q in quanta.values():
            for ids in q.outputs.values():
                for i in ids:
                    owner = taken.get(datasets[i].path)
                    if owner is not None and owner != i and owner not in q.clobber and len(problems) < 20:
                        problems.append(f"{datasets[i].path} (planned for {q.task}) is the file of "
                                        f"{self.registry.get_dataset(owner) or owner}")
        if problems:
            raise PlanningError(f"output run {self.output_run!r} would overwrite files of other datasets; choose "
                                "another -o:\n  " + "\n  ".join(problems))

    def _check_output_run(self) -> None:
        info = self.registry.query_collections(self.output_run)
        if not info:
            return
        if info[0].type != CollectionType.RUN:
            raise PlanningError(f"output {self.output_run!r} exists as a {info[0].type.value} collection, not a RUN")
        recorded = self.registry.run_inputs(self.output_run)
        if recorded is not None and recorded != self.inputs:
            missing = [c for c in recorded if c not in self.inputs]
            added = [c for c in self.inputs if c not in recorded]
            parts = []
            if missing:
                parts.append(f"it was made from {missing} that this plan lacks")
            if added:
                parts.append(f"this plan adds {added}")
            if not parts:
                parts.append(f"the order differs (recorded {recorded})")
            raise PlanningError(f"output run {self.output_run!r} was made with inputs {recorded}, this plan uses "
                                f"{self.inputs}: {'; '.join(parts)}. Use the same -i or a new -o.")

    def _existing(self, collections: Sequence[str], dataset_type: str) -> dict[str, DatasetRef]:
        if not collections or self.registry.get_dataset_type(dataset_type, missing_ok=True) is None:
            return {}
        refs = self.registry.query_datasets(dataset_type, list(collections))
        if not refs:
            return {}
        dims = self.universe.required(refs[0].dataset_type.dimensions)  # universe.data_id_key's, in bulk
        return dict(zip(_keys(dims, [r.data_id for r in refs]), refs, strict=True))

    @staticmethod
    def _node_from_ref(ref: DatasetRef) -> DatasetNode:
        path, formatter = ref.location()
        return DatasetNode(ref.id, ref.name, dict(ref.data_id), ref.run, path, formatter, ref.checksum, True,
                           ref.size, ref.mtime_ns)

    # -- main ---------------------------------------------------------------------------------
    def plan(self) -> QuantumGraph:
        with paused_gc():
            return self._plan()

    def _plan(self) -> QuantumGraph:
        t0 = time.perf_counter()
        if not self.inputs:
            raise PlanningError("no input collections given (-i)")
        if not len(self.pipeline):
            raise PlanningError("the pipeline selection holds no tasks")
        # A task its config switches off (quantum_where None: isr for no instrument) is not part of the plan.
        off = [t.label for t in self.pipeline if t.quantum_where is None]
        if off:
            if len(off) == len(self.pipeline):
                raise PlanningError(f"every task of the selection is switched off by its config: {', '.join(off)}")
            self.pipeline = replace(self.pipeline, tasks=[t for t in self.pipeline if t.label not in off])
        self._check_names()
        self.registry.resolve_collections(self.inputs)  # every input collection exists
        if self.skip_existing_in:
            self.registry.resolve_collections(self.skip_existing_in)
        types = self._check_dataset_types()
        self._check_output_run()
        available: dict[str, _Available] = {}
        for name in self.pipeline.overall_inputs():
            dt = types[name]
            applies = self.node is not None and self.where_dims <= set(self.universe.expanded(dt.dimensions))
            refs = []
            if self.registry.get_dataset_type(name, missing_ok=True) is not None:
                refs = self.registry.query_datasets(name, self.inputs, self.where if applies else "", self.binds)
            available[name] = _Available([self._node_from_ref(r) for r in refs], where_applied=applies)
        prereq_cache: dict[str, _Available] = {}
        missing_prereqs: list[str | _MissingPrereq] = []
        datasets: dict[str, DatasetNode] = {}  # only what some quantum reads or writes
        quanta: dict[str, Quantum] = {}
        tasks: dict[str, TaskInfo] = {}
        dataset_types: dict[str, dict[str, Any]] = {}
        for name, dt in types.items():
            dataset_types[name] = {"dimensions": list(dt.dimensions), "storage_class": dt.storage_class,
                                   "formatter": self.butler.datastore.formatter(dt.storage_class).name}
        skip_existing: dict[str, dict[str, DatasetRef]] = {}
        in_output: dict[str, dict[str, DatasetRef]] = {}
        output_exists = bool(self.registry.query_collections(self.output_run))
        skip_is_output = self.skip_existing_in == [self.output_run]  # a re-plan into its own run: one query, not two
        for t in self.pipeline:
            for c in t.outputs():
                done = skip_existing[c.dataset_type] = self._existing(self.skip_existing_in, c.dataset_type)
                in_output[c.dataset_type] = ({} if not output_exists else done if skip_is_output
                                             else self._existing([self.output_run], c.dataset_type))
        partial_problems: list[str] = []
        self.available = available
        for t in self.pipeline:
            report = self.reports[t.label] = TaskReport(t.label)
            tasks[t.label] = TaskInfo(
                t.label, t.class_path, t.config.model_dump(mode="json"), t.config_hash, tuple(t.dimensions),
                {n: {"dataset_type": c.dataset_type, "dimensions": list(c.dimensions), "storage_class": c.storage_class,
                     "multiple": c.multiple, "kind": c.kind, "minimum": c.minimum,
                     "lazy": c.lazy} for n, c in t.connections.items()},
                t.resources.model_dump(), tuple(t.task_class.related_records))
            for c in t.prerequisites():
                if c.calibration:
                    continue  # by validity range: _calib_index
                if c.dataset_type not in prereq_cache:
                    refs = (self.registry.query_datasets(c.dataset_type, self.inputs)
                            if self.registry.get_dataset_type(c.dataset_type, missing_ok=True) else [])
                    prereq_cache[c.dataset_type] = _Available([self._node_from_ref(r) for r in refs])
            made = self._plan_task(t, available, prereq_cache, report, missing_prereqs)
            self._make_quanta(t, made, report, dataset_types, skip_existing, in_output, available, datasets, quanta,
                              partial_problems)
        if missing_prereqs:
            missing_lines = _missing_lines(missing_prereqs, str(self.butler.root))
            shown = missing_lines[:50]
            more = f"\n  ... and {len(missing_lines) - 50} more" if len(missing_lines) > 50 else ""
            raise PlanningError("missing prerequisite inputs (in collections " + ", ".join(self.inputs) + "):\n  "
                                + "\n  ".join(shown) + more)
        if partial_problems:
            raise PlanningError("outputs already exist in the output run (use --skip-existing-in "
                                f"{self.output_run} to skip finished quanta, or --clobber-outputs to replace them):\n  "
                                + "\n  ".join(partial_problems[:50]))
        if not quanta:
            raise PlanningError(self._why_empty())
        self._check_paths_free(datasets, quanta)
        # The records of each quantum's own dimensions travel with the graph (tasks may ask for them).
        records: dict[str, dict[str, dict]] = {}
        of_task: dict[str, list[dict]] = defaultdict(list)  # one pass over the quanta, not one per task and dim
        for q in quanta.values():
            of_task[q.task].append(q.data_id)
        for label, info in tasks.items():
            ids = of_task[label]
            for dim in info.dimensions:
                req = self.universe.required([dim])
                table = self._records_of(dim)
                found = [rec for rec in map(table.get, dict.fromkeys(map(_tuple_getter(req), ids))) if rec is not None]
                records.setdefault(dim, {}).update(zip(_keys(req, found), found, strict=True))
            for dim in info.related_records:  # e.g. the targets of a field quantum (PipelineTask.related_records)
                req = self.universe.required([dim])
                key_of = _key_maker(req)
                carried = [d for d in self.universe.expanded([dim]) if d in info.dimensions and d != dim]
                wanted = set(map(_tuple_getter(carried), ids))
                bucket = records.setdefault(dim, {})
                for rec in self._records_of(dim).values():
                    if carried and tuple(rec.get(d) for d in carried) in wanted:
                        bucket[key_of(rec)] = rec
        header = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "repo": str(self.butler.root),
            "repo_id": self.butler.repo_id,
            "datastore_root": str(self.butler.datastore.root), "pipeline": self.pipeline_spec,
            "inputs": self.inputs, "output_run": self.output_run, "where": self.where, "binds": self.binds,
            "skip_existing_in": self.skip_existing_in, "clobber_outputs": self.clobber,
            "plan_seconds": round(time.perf_counter() - t0, 3),
            "skipped": {label: r.skipped_existing for label, r in self.reports.items() if r.skipped_existing},
        }
        return QuantumGraph(header, tasks, dataset_types, datasets, quanta, records)

    def _make_quanta(self, t: TaskDef, made: list[tuple[dict, dict[str, list[DatasetNode]]]], report: TaskReport,
                     dataset_types: dict[str, dict[str, Any]], skip_existing: dict[str, dict[str, DatasetRef]],
                     in_output: dict[str, dict[str, DatasetRef]], available: dict[str, _Available],
                     datasets: dict[str, DatasetNode], quanta: dict[str, Quantum], partial_problems: list[str]) -> None:
        """The quanta of one task and their predicted outputs (or, with --skip-existing-in, the outputs found).

        The hot part of planning: IDs, data IDs and paths are made column by column, each column in one call; only
        a re-plan over existing outputs then goes quantum by quantum, to skip or refuse those quanta.
        """
        task_req = self.universe.required(t.dimensions)
        order = self.universe.data_id_order(t.dimensions)
        run, label = self.output_run, t.label
        specs: list[_OutputSpec] = []
        for c in t.outputs():
            oreq = self.universe.required(c.dimensions)
            odims = self.universe.data_id_order(c.dimensions)
            specs.append(_OutputSpec(
                c.name, c.dataset_type, odims, None if tuple(oreq) == tuple(task_req) else tuple(oreq),
                tuple(odims) == tuple(order), dataset_types[c.dataset_type]["formatter"], tuple(oreq),
                self.butler.datastore.formatter(c.storage_class).extension, skip_existing[c.dataset_type],
                in_output[c.dataset_type], available.setdefault(c.dataset_type, _Available()).nodes))
        data_ids = [m[0] for m in made]
        keys = _keys(task_req, data_ids)
        columns = [_output_column(run, spec, data_ids, keys) for spec in specs]
        qids = quantum_uuids(run, label, keys)
        outputs = _outputs_of([spec.name for spec in specs], columns, len(made))
        ids_of: dict[int, list[str]] = {}  # quanta sharing an input read one list of nodes: its ids are made once
        if not any(spec.in_skip or spec.in_output for spec in specs):  # a first plan: nothing to skip or refuse
            q_inputs = [_input_ids(inputs, ids_of, datasets) for _, inputs in made]
            for spec, col in zip(specs, columns, strict=True):
                datasets.update((n.id, n) for n in col.nodes)
                spec.available.extend(col.nodes)
            quanta.update(zip(qids, map(Quantum, qids, repeat(label), data_ids, q_inputs, outputs,
                                        [[] for _ in qids]), strict=True))
            report.quanta += len(made)
            return
        for i, (data_id, inputs) in enumerate(made):
            if specs and all(spec.in_skip.get(col.keys[i]) is not None for spec, col in zip(specs, columns, strict=True)):
                report.skipped_existing += 1
                for spec, col in zip(specs, columns, strict=True):
                    node = self._node_from_ref(spec.in_skip[col.keys[i]])
                    datasets[node.id] = node
                    spec.available.append(node)
                continue
            have = [ref for spec, col in zip(specs, columns, strict=True)
                    if (ref := spec.in_output.get(col.keys[i])) is not None]
            if have and not self.clobber:
                partial_problems.append(f"{label} {{{keys[i]}}}: output run already holds "
                                        f"{', '.join(map(str, have))}")
                continue
            q_in = _input_ids(inputs, ids_of, datasets)
            quanta[qids[i]] = Quantum(qids[i], label, data_id, q_in, outputs[i], [ref.id for ref in have])
            report.quanta += 1
            for spec, col in zip(specs, columns, strict=True):
                datasets[col.nodes[i].id] = col.nodes[i]
                spec.available.append(col.nodes[i])

    def _plan_task(self, t: TaskDef, available: dict[str, _Available], prereqs: dict[str, _Available],
                   report: TaskReport, missing_prereqs: list) -> list[tuple[dict, dict[str, list[DatasetNode]]]]:
        """Quantum data IDs of one task and each one's inputs."""
        E = self.universe.expanded(t.dimensions)
        Eset = set(E)
        order = self.universe.data_id_order(t.dimensions)
        regular = t.inputs()
        rows: list[tuple] | None = None  # the candidate data IDs, as tuples of the values of cols
        cols: list[str] = []
        shared_of: dict[str, tuple[str, ...]] = {}
        merged = {c.name: self._alternatives(c, available) for c in regular}
        for c in regular:
            avail = merged[c.name]
            shared = tuple(d for d in self.universe.expanded(c.dimensions) if d in Eset)
            shared_of[c.name] = shared
            if not avail.nodes:
                report.no_input.append(c.dataset_type)
            # ordered, not a set: string hashing differs per process, and the quanta's order (hence every
            # gathered input list and the order of floating-point sums in the tasks) would differ between plans
            keys = avail.index(shared)  # keyed in the nodes' order, built once for the lookups below too
            rows, cols = self._join(rows, cols, list(keys), shared)
        # Dimensions no input carries come from their records; the most specific first (an overlap
        # dimension brings its patch), so no join is a needless cross product.
        missing_dims = sorted((d for d in E if d not in cols), key=lambda d: -len(self.universe.expanded([d])))
        for dim in missing_dims:
            if dim in cols:
                continue
            carried = set(self.universe.required([dim])) | set(self.universe[dim].implies)
            rec_dims = tuple(d for d in E if d in carried)
            records = self._records_of(dim).values()
            try:
                rel = list(map(_tuple_getter(rec_dims), records))
            except KeyError:  # a record without some implied value
                rel = [tuple(r.get(d) for d in rec_dims) for r in records]
            rows, cols = self._join(rows, cols, rel, rec_dims)
        rows = rows or []
        report.candidates = len(rows)
        where_needed = self.node is not None and self.where_dims <= Eset and not (
            regular and all(merged[c.name].where_applied for c in regular))
        task_node = self._task_where(t, Eset)
        calib = {c.name: self._calib_index(c, tuple(d for d in self.universe.expanded(c.dimensions) if d in Eset), t)
                 for c in t.prerequisites() if c.calibration}
        result = []
        # A data ID holds every dimension of the task (order), None where no join gave one.
        at = {c: i for i, c in enumerate(cols)}
        if not set(order) <= at.keys():
            rows = [r + (None,) for r in rows]
        id_values = _tuple_getter([at.get(d, len(cols)) for d in order])
        lookups = [(c.name, c.dataset_type, c.multiple, c.minimum, merged[c.name].index(shared_of[c.name]),
                    _tuple_getter([at[d] for d in shared_of[c.name]])) for c in regular]
        prerequisites = t.prerequisites()
        dropped = report.dropped_missing
        for row in rows:
            data_id = dict(zip(order, id_values(row), strict=True))
            if where_needed and not self._where_ok(data_id):
                report.dropped_by_where += 1
                continue
            if task_node is not None and not self._where_ok(data_id, task_node):
                continue  # outside the task's own selection (quantum_where): not a candidate of this task
            inputs: dict[str, list[DatasetNode]] = {}
            ok = True
            for name, dataset_type, multiple, minimum, index, values in lookups:
                found = index.get(values(row))
                if found is None or (len(found) < minimum if multiple else len(found) != 1):
                    if not (multiple and found is None and minimum <= 0):
                        dropped[dataset_type] = dropped.get(dataset_type, 0) + 1
                        ok = False
                        break
                    found = []
                inputs[name] = found
            if not ok:
                continue
            for c in prerequisites:
                shared = tuple(d for d in self.universe.expanded(c.dimensions) if d in Eset)
                if c.calibration:
                    node, problem = self._calib_find(c, shared, calib[c.name], data_id, t.label)
                    if node is None:
                        missing_prereqs.append(problem)
                        ok = False
                    else:
                        inputs[c.name] = [node]
                    continue
                found = prereqs[c.dataset_type].index(shared).get(tuple(data_id[d] for d in shared), [])
                if not found and c.optional:  # the task does without it (and says so in its output)
                    inputs[c.name] = []
                    continue
                if not found or (not c.multiple and len(found) > 1):
                    problem = "none found" if not found else f"{len(found)} found, 1 expected"
                    missing_prereqs.append(_MissingPrereq(c.dataset_type, tuple((d, data_id[d]) for d in shared),
                                                          t.label, problem, c.hint))
                    ok = False
                    continue
                inputs[c.name] = found
            if ok:
                result.append((data_id, inputs))
        return result

    # -- calibrations, alternatives, a task's own selection ------------------------------------
    def _alternatives(self, c, available: dict[str, _Available]) -> _Available:
        """The datasets an input reads: per data ID, of the first of its dataset types that has one.

        In the inputs or among earlier tasks' outputs; one pass over each type's datasets, once per task.
        """
        if not c.alternatives:
            return available.get(c.dataset_type, _Available())
        key_dims = self.universe.required(c.dimensions)
        out = _Available(where_applied=all(available.get(n, _Available()).where_applied for n in c.dataset_types))
        taken: set[tuple] = set()
        for name in c.dataset_types:
            added = set()
            for n in available.get(name, _Available()).nodes:
                key = tuple(n.data_id.get(d) for d in key_dims)
                if key not in taken:
                    out.nodes.append(n)
                    added.add(key)
            taken |= added
        return out

    def _task_where(self, t: TaskDef, dims: set[str]) -> Any:
        """The parsed ``quantum_where`` of a task, its names checked against the task's dimensions."""
        text = t.quantum_where
        if not text:
            return None
        try:
            node = parse_where(text)
        except OpenAstroError as exc:
            raise PlanningError(f"task {t.label!r}: its own selection {text!r} is not a where expression: {exc}") from None
        outside = {d for d, _ in referenced_identifiers(node, {})} - dims
        if outside:
            raise PlanningError(f"task {t.label!r}: its own selection {text!r} names {sorted(outside)}, not dimensions "
                                f"of the task")
        return node

    def _calib_index(self, c, shared: tuple[str, ...], t: TaskDef) -> ValidityIndex:
        """Certified datasets of a calibration prerequisite by (shared data ID values, night).

        Read and indexed once per dataset type and shared dimensions, so each quantum's lookup costs a dictionary
        hit and a bisection.
        """
        dim, _ = NIGHT_DIMENSION
        if dim not in self.universe.expanded(t.dimensions):
            raise PlanningError(f"task {t.label!r}: calibration prerequisite {c.name!r} is looked up by the night of "
                                f"an {dim}, which is not a dimension of the task")
        key = (c.dataset_type, shared)
        if key not in self._calib_cache:
            index: ValidityIndex = ValidityIndex()
            for rank, cert in certified(self.registry, c.dataset_type, self.inputs):
                node = self._node_from_ref(cert.ref)
                index.add(tuple(node.data_id.get(d) for d in shared), rank, cert.begin, cert.end, node)
            self._calib_cache[key] = index
        return self._calib_cache[key]

    def _calib_find(self, c, shared: tuple[str, ...], index: ValidityIndex, row: Mapping[str, Any],
                    label: str) -> tuple[DatasetNode | None, str]:
        """The certified dataset valid for the night of this row's exposure, or why there is none."""
        dim, attr = NIGHT_DIMENSION
        req = self.universe.required([dim])
        rec = self._records_of(dim).get(tuple(row.get(d) for d in req))
        night = None if rec is None else rec.get(attr)
        key = tuple(row.get(d) for d in shared)
        node = index.find(key, int(night)) if night is not None else None
        if node is not None:
            return node, ""
        ident = ", ".join(f"{d}={row.get(d)!r}" for d in shared)
        have = index.ranges(key)
        why = (f"certified only for {', '.join(f'{b}-{e}' for b, e in have)}" if have
               else "none certified in the CALIBRATION collections of the inputs")
        hint = getattr(c, "hint", "") or "run pipelines/calib.yaml, then openastro-butler certify-calibrations"
        return None, (f"{c.dataset_type} {{{ident}}} needed by task {label!r} for {dim} {row.get(dim)} (night {night}): "
                      f"{why}; {hint}")

    @staticmethod
    def _join(rows: list[tuple] | None, cols: list[str], rel: list[tuple],
              rel_cols: Sequence[str]) -> tuple[list[tuple], list[str]]:
        """Natural (hash) join of two relations held as lists of tuples of the values of their named columns.

        Tuples, not dicts: a joined row is one concatenation, a key one itemgetter call.
        """
        if rows is None:
            return rel, list(rel_cols)
        extra = [i for i, c in enumerate(rel_cols) if c not in cols]
        rest = _tuple_getter(extra)
        out_cols = cols + [rel_cols[i] for i in extra]
        on = [c for c in rel_cols if c in cols]
        if not on:
            tails = list(map(rest, rel))
            return [a + b for a in rows for b in tails], out_cols
        idx: dict[tuple, list[tuple]] = defaultdict(list)
        for key, tail in zip(map(_tuple_getter([rel_cols.index(c) for c in on]), rel), map(rest, rel), strict=True):
            idx[key].append(tail)
        get = idx.get
        empty: list[tuple] = []
        key_of = _tuple_getter([cols.index(c) for c in on])
        return [a + b for a in rows for b in get(key_of(a), empty)], out_cols

    def _why_empty(self) -> str:
        for label, r in self.reports.items():
            if r.quanta or r.skipped_existing:
                continue
            reasons = []
            if r.no_input:
                where = f" matching where {self.where!r}" if self.where else ""
                reasons.append(f"no {', '.join(r.no_input)} datasets in collections {', '.join(self.inputs)}{where} "
                               "(nor produced by an earlier task)")
            elif r.candidates == 0:
                reasons.append("its inputs share no data IDs")
            if r.dropped_by_where:
                reasons.append(f"the where expression {self.where!r} excluded all {r.dropped_by_where} candidate data IDs")
            for name, n in r.dropped_missing.items():
                reasons.append(f"{n} candidate data IDs lacked {name}")
            return f"empty quantum graph: task {label!r} found no data: " + "; ".join(reasons or ["no data IDs"])
        done = sum(r.skipped_existing for r in self.reports.values())
        return (f"empty quantum graph: all {done} quanta already have their outputs in "
                f"{', '.join(self.skip_existing_in)}: nothing to do")
