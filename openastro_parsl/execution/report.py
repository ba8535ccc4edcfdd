"""Reading a run directory back: failed quanta, one quantum's log, a static HTML page.

Failed quanta come with their errors and log tails; the HTML page (timeline, CPU and memory per task, graph coloured
by state, failures) is one self-contained file to hand to a colleague.
"""

from __future__ import annotations

import html
import json
from collections import deque
from pathlib import Path
from typing import Any

from ..errors import OpenAstroError
from ..registry.where import Node, evaluate_where, parse_where, referenced_identifiers
from . import report_svg
from .runlock import run_liveness
from .status import StatusStore
from .submit import GRAPH_FILE, STATUS_FILE, summarize
from .timeline import timeline_json


def open_run(run_dir: str | Path) -> StatusStore:
    """The status store of a run directory; a one-line error when ``run_dir`` is not one."""
    run_dir = Path(run_dir)
    if not (run_dir / STATUS_FILE).exists():
        raise OpenAstroError(f"{run_dir} is not a run directory of openastro-submit (no {STATUS_FILE})")
    return StatusStore(run_dir / STATUS_FILE)


def run_state(status: StatusStore) -> str | None:
    """The run's state as recorded, or ``dead`` for a ``running`` run whose submit process is gone.

    A killed submit (or one whose node was lost) moves nothing on until ``--resume``.
    """
    state = status.meta("state")
    if state != "running":
        return state
    holder = {"host": status.meta("submit_host"), "pid": status.meta("submit_pid"),
              "pid_start": status.meta("submit_pid_start")}
    alive = run_liveness(status.meta("repo") or ".", status.meta("output_run") or "", holder)
    return "running" if alive else "dead"


def tail(path: str | Path | None, lines: int = 20) -> list[str]:
    """The last ``lines`` lines of a log file (none when there is no file)."""
    if not path or not Path(path).exists():
        return []
    with open(path, errors="replace") as f:
        return [line.rstrip("\n") for line in deque(f, maxlen=lines)]


def failed_quanta(status: StatusStore, lines: int = 20, include_blocked: bool = False) -> list[dict[str, Any]]:
    """The run's failed quanta (also those they blocked, with ``include_blocked``): error, logs, stderr tail."""
    states = ("failed", "upstream_failed") if include_blocked else ("failed",)
    out = []
    for row in status.rows(f"WHERE state IN ({','.join('?' * len(states))}) ORDER BY task, data_id", states):
        out.append({"quantum_id": row["id"], "task": row["task"], "data_id": json.loads(row["data_id"]),
                    "state": row["state"], "kind": row["error_kind"], "error_type": row["error_type"],
                    "message": row["message"], "attempts": row["attempts"], "host": row["host"],
                    "slurm_job_id": row["slurm_job_id"],
                    "logs": {"stdout": row["stdout"], "stderr": row["stderr"], "jsonl": row["jsonl"]},
                    "stderr_tail": tail(row["stderr"], lines) if row["state"] == "failed" else []})
    return out


def no_work_reasons(status: StatusStore) -> dict[str, dict[str, int]]:
    """Per task, how many quanta found nothing to do for each reason (a frame that did not plate-solve...)."""
    out: dict[str, dict[str, int]] = {}
    for row in status.rows("WHERE state = 'no_work' ORDER BY task"):
        reasons = out.setdefault(row["task"], {})
        reasons[row["message"] or ""] = reasons.get(row["message"] or "", 0) + 1
    return out


def find_quantum(status: StatusStore, task: str, data_id_text: str) -> list[Any]:
    """The rows of ``task``'s quanta whose data ID matches ``data_id_text``, a ``where`` expression."""
    node = parse_where(data_id_text)
    rows = list(status.rows("WHERE task = ?", (task,)))
    if not rows:
        tasks = sorted({r["task"] for r in status.rows()})
        raise OpenAstroError(f"no task {task!r} in this run; tasks: {', '.join(tasks)}")
    if node is None:
        return rows
    dims = {d for d, _ in referenced_identifiers(node, {})}
    return [r for r in rows if _matches(node, dims, json.loads(r["data_id"]))]


def _matches(node: Node, dims: set[str], data_id: dict[str, Any]) -> bool:
    """Whether a quantum's data ID has every dimension ``node`` names, and the values it asks for."""
    return dims <= set(data_id) and evaluate_where(node, lambda d, _a: data_id.get(d), {})


def report_json(run_dir: Path, lines: int = 20) -> dict[str, Any]:
    """The run as ``openastro-report --json`` prints it.

    Summary, state, failed quanta, no-work reasons, and the timeline's data: ``quanta`` (start, end, host, block,
    worker rank, pid, CPU seconds, peak RSS of each quantum that ran), ``workers`` (the timeline's rows) and
    ``sessions`` (when the submit and each resume started).
    """
    status = open_run(run_dir)
    summary = summarize(status, run_dir, status.meta("output_run", ""), 0.0).to_json()
    summary.pop("wall_s", None)
    saved = run_dir / "summary.json"
    if saved.exists():
        summary["wall_s"] = json.loads(saved.read_text()).get("wall_s")
    summary["state"] = run_state(status)
    summary["failed"] = failed_quanta(status, lines)
    summary["no_work"] = no_work_reasons(status)
    summary.update(timeline_json(status))
    return summary


def _graph_html(run_dir: Path, out: Path, states: dict[str, str]) -> str:
    """The quantum graph coloured by state, as inline SVG (or its DOT text when Graphviz is missing)."""
    from ..graph import dot as dotviz
    from ..graph.quantum_graph import QuantumGraph

    if not (run_dir / GRAPH_FILE).exists():
        return "<p>no graph in the run directory</p>"
    graph = QuantumGraph.load(run_dir / GRAPH_FILE)
    dot_text = dotviz.quantum_graph_dot(graph, states=states)
    svg_path = out.with_suffix(".graph.svg")
    try:
        dotviz.write(dot_text, svg_path)
        text = svg_path.read_text()
        return text[text.find("<svg"):]
    except OpenAstroError as exc:
        return f"<p>{html.escape(str(exc))}</p><pre>{html.escape(dot_text)}</pre>"


def _task_table(per_task: dict[str, dict[str, Any]]) -> str:
    cols = ("succeeded", "no_work", "failed", "upstream_failed", "skipped", "pending")
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols)
    body = "".join(
        f"<tr><td>{html.escape(t)}</td>" + "".join(f"<td>{c[s]}</td>" for s in cols)
        + f"<td>{c['wall_s']:.1f}</td><td>{c['cpu_s']:.1f}</td><td>{c['peak_mb']:.0f}</td></tr>"
        for t, c in per_task.items())
    return f"<table><tr><th>task</th>{head}<th>wall s</th><th>CPU s</th><th>peak MB</th></tr>{body}</table>"


def _failures_html(failed: list[dict[str, Any]], rows: dict[str, str]) -> str:
    """Each failed quantum with its error, where it ran, its log paths and the tail of its stderr."""
    out = []
    for f in failed:
        where = rows.get(f["quantum_id"], "did not reach a worker")
        out.append(
            f'<section class="failure" id="q-{html.escape(f["quantum_id"])}"><h3>{html.escape(f["task"])} '
            f'{html.escape(json.dumps(f["data_id"]))} — {html.escape(str(f["kind"]))}</h3>'
            f'<p>{html.escape(str(f["message"]))}</p><p>ran on {html.escape(where)}; attempts {f["attempts"]}'
            + (f'; SLURM job {html.escape(str(f["slurm_job_id"]))}' if f["slurm_job_id"] else "")
            + f'</p><p>log: <code>{html.escape(str(f["logs"]["stderr"]))}</code></p>'
            f'<pre>{html.escape(chr(10).join(f["stderr_tail"]))}</pre></section>')
    return "".join(out) or "<p>none</p>"


def _memory_note(quanta: list[dict[str, Any]]) -> str:
    lifetime = sum(1 for q in quanta if q["peak_rss_mb"] is not None and q["rss_scope"] != "quantum")
    if not lifetime:
        return ("<p>Peak memory is each quantum's own high-water mark in its worker process (reset at the quantum's "
                "start); subprocesses a task starts are counted in CPU, not in memory.</p>")
    return (f"<p>For {lifetime} quanta the worker could not reset its high-water mark (or the run predates it): their "
            "peak is the worker process's largest so far, an upper bound for the quantum.</p>")


_PAGE_CSS = """body{font-family:sans-serif;margin:2em} table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px} pre{background:#f6f6f6;padding:8px;overflow:auto}
.scroll{overflow-x:auto} .failure:target{background:#fff3f3}"""


def write_html(run_dir: Path, out: Path) -> Path:
    """Write the run's report to ``out`` as one self-contained HTML page (inline SVG, CSS and JS; opens offline).

    Per-task counts, a timeline (a row per worker, a bar per quantum), CPU and peak memory per quantum by task,
    the quantum graph coloured by state, and the failed quanta with their log tails.
    """
    status = open_run(run_dir)
    data = report_json(run_dir)
    quanta, workers = data["quanta"], data["workers"]
    colors = report_svg.task_colors(list(dict.fromkeys([*data["per_task"], *(q["task"] for q in quanta)])))
    states = [s for s in ("succeeded", "failed", "no_work") if any(q["state"] == s for q in quanta)]
    states += ["other"] if any(q["state"] not in ("succeeded", "failed", "no_work") for q in quanta) else []
    title = html.escape(data["output_run"])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>openastro run {title}</title>
<style>{_PAGE_CSS}{report_svg.CSS}</style></head><body>
<h1>Run {title}</h1><p>{html.escape(str(run_dir))} — state: {html.escape(str(data['state']))}, ok: {data['ok']},
wall {data.get('wall_s') or 0:.1f} s; {len(quanta)} quanta ran on {len(workers)} workers</p>
<h2>Per task</h2>{_task_table(data["per_task"])}
<h2>Timeline</h2>{report_svg.legend_html(colors, states)}
<div class="scroll">{report_svg.timeline_svg(quanta, workers, data["sessions"], colors)}</div>
<p id="timeline-shown"></p>
<h2>CPU time per quantum</h2><div class="scroll">{report_svg.strip_svg(quanta, "cpu_s", "s", colors, "CPU time")}</div>
<h2>Peak memory per quantum</h2>{_memory_note(quanta)}
<div class="scroll">{report_svg.strip_svg(quanta, "peak_rss_mb", "MB", colors, "peak memory")}</div>
<h2>Failures ({len(data['failed'])})</h2>{_failures_html(data["failed"], {q["quantum_id"]: q["row"] for q in quanta})}
<h2>Graph</h2>{_graph_html(run_dir, out, status.states())}
<script>{report_svg.JS}</script>
</body></html>"""
    out.write_text(page)
    return out
