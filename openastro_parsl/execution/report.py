"""Reading a run directory back: failed quanta, one quantum's log, a static HTML page.

Failed quanta come with their errors and log tails; the HTML page (graph coloured by state, timeline) is to hand to a
colleague.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import deque
from pathlib import Path
from typing import Any

from ..errors import OpenAstroError
from ..registry.where import Node, evaluate_where, parse_where, referenced_identifiers
from .runlock import run_liveness
from .status import StatusStore
from .submit import GRAPH_FILE, STATUS_FILE, summarize


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
    """The run as ``openastro-report --json`` prints it: summary, state, failed quanta, no-work reasons."""
    status = open_run(run_dir)
    summary = summarize(status, run_dir, status.meta("output_run", ""), 0.0).to_json()
    summary.pop("wall_s", None)
    saved = run_dir / "summary.json"
    if saved.exists():
        summary["wall_s"] = json.loads(saved.read_text()).get("wall_s")
    summary["state"] = run_state(status)
    summary["failed"] = failed_quanta(status, lines)
    summary["no_work"] = no_work_reasons(status)
    return summary


def _timeline_png(status: StatusStore) -> str | None:
    rows = [r for r in status.rows("WHERE started IS NOT NULL AND ended IS NOT NULL ORDER BY started")]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = min(r["started"] for r in rows)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    colors = {"succeeded": "#2e7d32", "failed": "#c62828"}
    fig, ax = plt.subplots(figsize=(10, 0.5 + 0.4 * len(tasks)))
    for r in rows:
        y = tasks.index(r["task"])
        ax.barh(y, r["ended"] - r["started"], left=r["started"] - t0, height=0.6,
                color=colors.get(r["state"], "#9e9e9e"), alpha=0.6)
    ax.set_yticks(range(len(tasks)), tasks)
    ax.set_xlabel("seconds since first quantum started")
    ax.set_title("quanta over time (green succeeded, red failed)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_html(run_dir: Path, out: Path) -> Path:
    """Write the run's report as one static HTML page (graph coloured by state, timeline) to ``out``."""
    from ..graph import dot as dotviz
    from ..graph.quantum_graph import QuantumGraph

    status = open_run(run_dir)
    data = report_json(run_dir)
    states = status.states()
    graph_html = ""
    if (run_dir / GRAPH_FILE).exists():
        graph = QuantumGraph.load(run_dir / GRAPH_FILE)
        dot_text = dotviz.quantum_graph_dot(graph, states=states)
        svg_path = out.with_suffix(".graph.svg")
        try:
            dotviz.write(dot_text, svg_path)
            graph_html = svg_path.read_text()
            graph_html = graph_html[graph_html.find("<svg"):]
        except OpenAstroError as exc:
            graph_html = f"<p>{html.escape(str(exc))}</p><pre>{html.escape(dot_text)}</pre>"
    png = _timeline_png(status)
    rows = "".join(
        f"<tr><td>{html.escape(t)}</td>" + "".join(f"<td>{c[s]}</td>" for s in
                                                  ("succeeded", "no_work", "failed", "upstream_failed", "skipped", "pending"))
        + f"<td>{c['wall_s']:.1f}</td><td>{c['peak_mb']:.0f}</td></tr>"
        for t, c in data["per_task"].items())
    fails = "".join(
        f"<h3>{html.escape(f['task'])} {html.escape(json.dumps(f['data_id']))} — {html.escape(str(f['kind']))}</h3>"
        f"<p>{html.escape(str(f['message']))}</p><p>log: <code>{html.escape(str(f['logs']['stderr']))}</code></p>"
        f"<pre>{html.escape(chr(10).join(f['stderr_tail']))}</pre>" for f in data["failed"])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>openastro run {html.escape(data['output_run'])}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px}}
pre{{background:#f6f6f6;padding:8px;overflow:auto}}</style></head><body>
<h1>Run {html.escape(data['output_run'])}</h1><p>{html.escape(str(run_dir))} — state: {html.escape(str(data['state']))},
ok: {data['ok']}</p>
<h2>Per task</h2><table><tr><th>task</th><th>succeeded</th><th>no work</th><th>failed</th><th>upstream failed</th><th>skipped</th>
<th>pending</th><th>wall s</th><th>peak MB</th></tr>{rows}</table>
<h2>Graph</h2>{graph_html}
<h2>Timeline</h2>{f'<img src="data:image/png;base64,{png}">' if png else '<p>no quantum has run yet</p>'}
<h2>Failures ({len(data['failed'])})</h2>{fails or '<p>none</p>'}
</body></html>"""
    out.write_text(page)
    return out
