"""Pictures of pipelines and quantum graphs: Graphviz DOT text, rendered files, and a plain-text tree.

``pipeline_dot`` draws tasks and dataset types; ``quantum_graph_dot`` draws quanta and datasets (optionally
coloured by execution state) and, when that would be too many nodes to read, collapses to one node per task
and per dataset type with counts. ``write`` saves DOT text or renders it with Graphviz ``dot`` when that is
installed. Every identifier and label in the DOT is a quoted, escaped string, so data ID values with quotes,
backslashes or newlines cannot break the file.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from ..errors import OpenAstroError
from .quantum_graph import QuantumGraph

# -- styling ----------------------------------------------------------------------------------

TASK_STYLE = {"shape": "box", "style": "rounded,filled", "fillcolor": "#dbe9f6"}
DATASET_STYLE = {"shape": "ellipse", "style": "solid"}                       # produced / predicted
INPUT_STYLE = {"shape": "ellipse", "style": "filled", "fillcolor": "#d9d9d9"}  # overall input / exists

#: Fill colour of a quantum (or, collapsed, of a task) per execution state.
STATE_COLORS: dict[str, str] = {
    "succeeded": "#8fd19e",        # green
    "failed": "#f28b82",           # red
    "upstream_failed": "#fbbc6b",  # orange
    "running": "#fff176",          # yellow
    "pending": "#e0e0e0",          # grey
    "skipped": "#bdbdbd",          # darker grey
}
UNKNOWN_STATE_COLOR = "#ffffff"

#: Worst first: a collapsed task node takes the colour of the worst state among its quanta.
STATE_ORDER: tuple[str, ...] = ("failed", "upstream_failed", "running", "pending", "skipped", "succeeded")

DOT_TIMEOUT = 120.0
RENDER_FORMATS = ("svg", "png", "pdf")


# -- DOT text helpers -------------------------------------------------------------------------

def quote(value: Any) -> str:
    r"""A DOT double-quoted string: backslashes and quotes escaped, line breaks as DOT's ``\n``."""
    text = str(value)
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")
    return f'"{text}"'


def _attrs(attrs: dict[str, Any]) -> str:
    items = [f"{k}={quote(v)}" for k, v in attrs.items() if v is not None]
    return f" [{', '.join(items)}]" if items else ""


class _Dot:
    """Accumulates one statement per line (easy to read, easy to test)."""

    def __init__(self, name: str, title: str | None = None):
        self.lines = [f"digraph {quote(name)} {{"]
        graph_attrs = {"rankdir": "TB", "fontname": "Helvetica", "fontsize": "11"}
        if title:
            graph_attrs |= {"label": title, "labelloc": "t"}
        self.lines.append(f"  graph{_attrs(graph_attrs)};")
        self.lines.append(f"  node{_attrs({'fontname': 'Helvetica', 'fontsize': '10'})};")
        self.lines.append(f"  edge{_attrs({'fontname': 'Helvetica', 'fontsize': '9', 'color': '#555555'})};")

    def node(self, node_id: str, **attrs: Any) -> None:
        self.lines.append(f"  {quote(node_id)}{_attrs(attrs)};")

    def edge(self, a: str, b: str, **attrs: Any) -> None:
        self.lines.append(f"  {quote(a)} -> {quote(b)}{_attrs(attrs)};")

    def text(self) -> str:
        return "\n".join(self.lines + ["}"]) + "\n"


def _dims(dims: Iterable[str]) -> str:
    return f"({', '.join(dims)})"


def compact_data_id(data_id: dict[str, Any]) -> str:
    """``instrument=lco1m exposure=1042``."""
    return " ".join(f"{k}={v}" for k, v in data_id.items())


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# -- pipeline ---------------------------------------------------------------------------------

def pipeline_dot(pipeline) -> str:
    """The pipeline as DOT: tasks (boxes) and dataset types (ellipses), inputs dashed when prerequisites.

    Dataset types no task produces (overall inputs and prerequisites) are filled grey.
    """
    tasks = list(pipeline)
    produced = {c.dataset_type for t in tasks for c in t.outputs()}
    # one entry per dataset type in dataflow order: the producer's declaration wins, else the first consumer's
    types: dict[str, Any] = {}
    for t in tasks:
        for c in t.inputs() + t.prerequisites():
            types.setdefault(c.dataset_type, c)
        for c in t.outputs():
            types[c.dataset_type] = c

    title = getattr(pipeline, "source", "") or None
    dot = _Dot("pipeline", f"pipeline {title}" if title else None)
    for name, c in types.items():
        style = DATASET_STYLE if name in produced else INPUT_STYLE
        dot.node(f"dataset:{name}", label=f"{name}\n{_dims(c.dimensions)}\n{c.storage_class}", **style)
    for t in tasks:
        class_name = getattr(getattr(t, "task_class", None), "__name__", None) or t.class_path.rsplit(".", 1)[-1]
        dot.node(f"task:{t.label}", label=f"{t.label}\n{class_name}\n{_dims(t.dimensions)}",
                 tooltip=t.class_path, **TASK_STYLE)
    for t in tasks:
        for c in t.inputs() + t.prerequisites():
            dot.edge(f"dataset:{c.dataset_type}", f"task:{t.label}",
                     style="dashed" if c.kind == "prerequisite" else None,
                     tooltip=f"{c.name}{' (multiple)' if c.multiple else ''}" if c.name else None)
        for c in t.outputs():
            dot.edge(f"task:{t.label}", f"dataset:{c.dataset_type}", tooltip=c.name or None)
    return dot.text()


# -- quantum graph ----------------------------------------------------------------------------

def _connection(graph: QuantumGraph, task: str, name: str) -> dict[str, Any]:
    info = graph.tasks.get(task)
    return (info.connections.get(name) if info is not None else None) or {}


def _dataset_type(graph: QuantumGraph, dataset_id: str, task: str, conn_name: str) -> str:
    node = graph.datasets.get(dataset_id)
    if node is not None:
        return node.dataset_type
    return _connection(graph, task, conn_name).get("dataset_type", conn_name)


def _referenced_datasets(graph: QuantumGraph) -> dict[str, None]:
    """Ids of every dataset a quantum reads or writes, in first-seen order."""
    seen: dict[str, None] = {}
    for q in graph.quanta.values():
        for ids in list(q.inputs.values()) + list(q.outputs.values()):
            for d in ids:
                seen.setdefault(d, None)
    return seen


def _state_of(states: dict[str, str] | None, quantum_id: str) -> str | None:
    if states is None:
        return None
    return states.get(quantum_id, "pending")


def _severity(state: str) -> int:
    """Higher is worse; unknown states rank with pending."""
    return len(STATE_ORDER) - STATE_ORDER.index(state if state in STATE_ORDER else "pending")


def _state_summary(counts: Counter) -> str:
    ordered = [s for s in STATE_ORDER if counts.get(s)] + sorted(s for s in counts if s not in STATE_ORDER)
    return ", ".join(f"{s} {counts[s]}" for s in ordered)


def quantum_graph_dot(graph: QuantumGraph, max_nodes: int = 300, states: dict[str, str] | None = None,
                      collapse: bool | None = None) -> str:
    """The quantum graph as DOT: quanta (boxes) linked through datasets (ellipses).

    Existing input datasets are filled grey, predicted outputs are plain. With ``states`` (quantum id ->
    succeeded / failed / upstream_failed / running / pending / skipped; a missing quantum counts as
    pending) quanta are filled with ``STATE_COLORS``. When quanta plus datasets exceed ``max_nodes``
    (or ``collapse`` is True) the graph is drawn per task instead: one node per task with its quantum
    count (and counts per state, coloured by the worst), one per dataset type with its dataset count,
    and edges labelled with how many links they stand for. ``collapse=False`` never collapses.
    """
    dataset_ids = _referenced_datasets(graph)
    n_nodes = len(graph.quanta) + len(dataset_ids)
    if collapse is None:
        collapse = n_nodes > max_nodes
    run = graph.header.get("output_run", "")
    state_counts = Counter(_state_of(states, q) for q in graph.quanta) if states is not None else None
    title = f"quantum graph{f' for {run}' if run else ''}: {_plural(len(graph.quanta), 'quantum', 'quanta')}, " \
            f"{_plural(len(dataset_ids), 'dataset', 'datasets')}"
    if state_counts:
        title += f"\n{_state_summary(state_counts)}"
    if collapse:
        title += f"\n(collapsed to tasks: {n_nodes} nodes > {max_nodes})" if n_nodes > max_nodes else "\n(per task)"
        return _task_level_dot(graph, states, title)

    dot = _Dot("quantum_graph", title)
    for d in dataset_ids:
        node = graph.datasets.get(d)
        if node is None:
            dot.node(f"dataset:{d}", label=f"?\n{d}", tooltip=d, **DATASET_STYLE)
            continue
        style = INPUT_STYLE if node.exists else DATASET_STYLE
        label = node.dataset_type + (f"\n{compact_data_id(node.data_id)}" if node.data_id else "")
        dot.node(f"dataset:{d}", label=label, tooltip=f"{node.run}: {node.path}", **style)
    for q in graph.quanta.values():
        attrs = dict(TASK_STYLE)
        state = _state_of(states, q.id)
        if state is not None:
            attrs["fillcolor"] = STATE_COLORS.get(state, UNKNOWN_STATE_COLOR)
        label = q.task + (f"\n{compact_data_id(q.data_id)}" if q.data_id else "")
        tooltip = q.id + (f" ({state})" if state else "")
        dot.node(f"quantum:{q.id}", label=label, tooltip=tooltip, **attrs)
    for q in graph.quanta.values():
        done: set[str] = set()
        for name, ids in q.inputs.items():
            prereq = _connection(graph, q.task, name).get("kind") == "prerequisite"
            for d in ids:
                if d not in done:
                    done.add(d)
                    dot.edge(f"dataset:{d}", f"quantum:{q.id}", style="dashed" if prereq else None)
        done.clear()
        for ids in q.outputs.values():
            for d in ids:
                if d not in done:
                    done.add(d)
                    dot.edge(f"quantum:{q.id}", f"dataset:{d}")
    return dot.text()


def _task_level_dot(graph: QuantumGraph, states: dict[str, str] | None, title: str) -> str:
    labels = list(dict.fromkeys(list(graph.tasks) + [q.task for q in graph.quanta.values()]))
    n_quanta: Counter = Counter(q.task for q in graph.quanta.values())
    task_states: dict[str, Counter] = {t: Counter() for t in labels}
    type_ids: dict[str, set[str]] = {}
    in_edges: Counter = Counter()       # (dataset type, task, prerequisite?) -> dataset->quantum links
    out_edges: Counter = Counter()      # (task, dataset type) -> datasets written
    for q in graph.quanta.values():
        if states is not None:
            task_states[q.task][_state_of(states, q.id)] += 1
        for name, ids in q.inputs.items():
            prereq = _connection(graph, q.task, name).get("kind") == "prerequisite"
            for d in ids:
                dt = _dataset_type(graph, d, q.task, name)
                type_ids.setdefault(dt, set()).add(d)
                in_edges[(dt, q.task, prereq)] += 1
        for name, ids in q.outputs.items():
            for d in ids:
                dt = _dataset_type(graph, d, q.task, name)
                type_ids.setdefault(dt, set()).add(d)
                out_edges[(q.task, dt)] += 1

    dot = _Dot("quantum_graph", title)
    for dt, members in type_ids.items():
        existing = sum(1 for d in members if (node := graph.datasets.get(d)) is not None and node.exists)
        label = f"{dt}\n{_plural(len(members), 'dataset', 'datasets')}"
        if 0 < existing < len(members):
            label += f" ({existing} existing)"
        style = INPUT_STYLE if existing == len(members) else DATASET_STYLE
        dot.node(f"dataset:{dt}", label=label, **style)
    for t in labels:
        attrs = dict(TASK_STYLE)
        label = f"{t}\n{_plural(n_quanta[t], 'quantum', 'quanta')}"
        counts = task_states[t]
        if states is not None and counts:
            label += f"\n{_state_summary(counts)}"
            worst = max(counts, key=_severity)
            attrs["fillcolor"] = STATE_COLORS.get(worst, UNKNOWN_STATE_COLOR)
        dot.node(f"task:{t}", label=label, **attrs)
    for (dt, t, prereq), n in in_edges.items():
        dot.edge(f"dataset:{dt}", f"task:{t}", label=str(n), style="dashed" if prereq else None)
    for (t, dt), n in out_edges.items():
        dot.edge(f"task:{t}", f"dataset:{dt}", label=str(n))
    return dot.text()


# -- files ------------------------------------------------------------------------------------

def write(dot_text: str, path, timeout: float = DOT_TIMEOUT) -> Path:
    """Write DOT text to ``path``: ``.dot``/``.gv`` as text, ``.svg``/``.png``/``.pdf`` rendered by Graphviz.

    Without Graphviz the DOT text goes to ``path.with_suffix('.dot')`` and an ``OpenAstroError`` says so.
    Returns the path written.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt in ("dot", "gv"):
        _write_text(path, dot_text)
        return path
    if fmt not in RENDER_FORMATS:
        raise OpenAstroError(f"{path}: cannot write a graph as {path.suffix or 'a file without a suffix'}; "
                             f"use .dot, .gv, {', '.join('.' + f for f in RENDER_FORMATS)}")
    exe = shutil.which("dot")
    if exe is None:
        dot_path = path.with_suffix(".dot")
        _write_text(dot_path, dot_text)
        raise OpenAstroError(f"Graphviz `dot` is not installed, so {path} was not rendered; the DOT text was "
                             f"written to {dot_path} (install Graphviz, e.g. `apt-get install graphviz`, then run "
                             f"`dot -T{fmt} {dot_path} -o {path}`)")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        proc = subprocess.run([exe, f"-T{fmt}", "-o", str(tmp)], input=dot_text.encode(), capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        tmp.unlink(missing_ok=True)
        dot_path = _save_for_debugging(path, dot_text)
        raise OpenAstroError(f"Graphviz `dot` took longer than {timeout:g} s to render {path}; the DOT text was "
                             f"written to {dot_path}") from None
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OpenAstroError(f"cannot run Graphviz `dot` ({exe}): {exc.strerror or exc}") from None
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        dot_path = _save_for_debugging(path, dot_text)
        stderr = proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise OpenAstroError(f"Graphviz `dot` failed to render {path}: {stderr}"
                             + (f" (the DOT text was written to {dot_path})" if dot_path else ""))
    try:
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OpenAstroError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise OpenAstroError(f"cannot write {path}: {exc.strerror or exc}") from None


def _save_for_debugging(path: Path, text: str) -> Path | None:
    dot_path = path.with_suffix(".dot")
    try:
        dot_path.write_text(text)
    except OSError:
        return None
    return dot_path


# -- plain text -------------------------------------------------------------------------------

def _count_by_type(graph: QuantumGraph, task: str, conns: dict[str, list[str]]) -> Counter:
    out: Counter = Counter()
    for name, ids in conns.items():
        for d in ids:
            out[_dataset_type(graph, d, task, name)] += 1
    return out


def _counted(n: int, one: str, many: str, by_type: Counter) -> str:
    detail = ", ".join(f"{dt} {k}" for dt, k in by_type.items())
    return _plural(n, one, many) + (f" ({detail})" if detail else "")


def text_tree(graph: QuantumGraph, max_per_task: int = 5) -> str:
    """Tasks in order, each with its quantum count, dataset types read and written, and its first quanta."""
    dataset_ids = _referenced_datasets(graph)
    existing = sum(1 for d in dataset_ids if (n := graph.datasets.get(d)) is not None and n.exists)
    run = graph.header.get("output_run", "")
    lines = [f"quantum graph{f' for {run}' if run else ''}: {_plural(len(graph.quanta), 'quantum', 'quanta')}, "
             f"{_plural(len(dataset_ids), 'dataset', 'datasets')} ({existing} existing, "
             f"{len(dataset_ids) - existing} to be written)"]
    by_task: dict[str, list] = {t: [] for t in graph.tasks}
    for q in graph.quanta.values():
        by_task.setdefault(q.task, []).append(q)
    for label, quanta in by_task.items():
        info = graph.tasks.get(label)
        dims = f" {_dims(info.dimensions)}" if info is not None else ""
        lines.append(f"{label}{dims}: {_plural(len(quanta), 'quantum', 'quanta')}")
        conns = info.connections if info is not None else {}
        for kinds, heading in ((("input", "prerequisite"), "inputs: "), (("output",), "outputs:")):
            parts = []
            for name, c in conns.items():
                if c.get("kind") not in kinds:
                    continue
                ids = {d for q in quanta for d in (q.inputs if c["kind"] != "output" else q.outputs).get(name, ())}
                notes = [x for x, on in (("prerequisite", c.get("kind") == "prerequisite"),
                                         ("multiple", c.get("multiple"))) if on]
                parts.append(f"{c.get('dataset_type', name)} {_plural(len(ids), 'dataset', 'datasets')}"
                             + (f" ({', '.join(notes)})" if notes else ""))
            if parts:
                lines.append(f"  {heading} {'; '.join(parts)}")
        for q in quanta[:max(max_per_task, 0)]:
            ins = _count_by_type(graph, q.task, q.inputs)
            outs = _count_by_type(graph, q.task, q.outputs)
            lines.append(f"    {compact_data_id(q.data_id) or '(empty data ID)'}: "
                         f"{_counted(sum(ins.values()), 'input', 'inputs', ins)}, "
                         f"{_counted(sum(outs.values()), 'output', 'outputs', outs)}")
        if len(quanta) > max_per_task:
            lines.append(f"    ... and {len(quanta) - max(max_per_task, 0)} more")
    return "\n".join(lines)
