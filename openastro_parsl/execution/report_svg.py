"""The report's drawings as inline SVG: the run timeline and per-task CPU and memory strip plots.

Written by hand rather than by matplotlib so that each bar is an element a browser (and a test) can find:
``<rect data-qid=...>`` in a ``<g data-row=...>`` per worker, with a ``<title>`` tooltip. No external
resource is referenced, so the page opens offline.
"""

from __future__ import annotations

import math
import zlib
from html import escape
from statistics import median
from typing import Any

from .timeline import LOST

# Colour-blind-safe qualitative palette (Okabe-Ito, then Tol's muted), cycled for more tasks.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#332288", "#88ccee",
           "#44aa99", "#117733", "#999933", "#ddcc77", "#882255", "#aa4499")
WIDTH, LABEL_W, ROW_H, BAR_H, TOP = 1100, 260, 18, 12, 28


def task_colors(tasks: list[str]) -> dict[str, str]:
    """A colour per task, in the order given (the pipeline's), shared by every drawing of the page."""
    return {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(tasks)}


def _nice_step(span: float, ticks: int = 8) -> float:
    """A round tick spacing (1, 2 or 5 times a power of ten) giving about ``ticks`` ticks over ``span``."""
    raw = max(span, 1e-9) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.2g}"


def _num(value: float) -> str:
    """A measured value to two or three significant figures, never in exponent notation."""
    size = abs(value)
    return f"{value:.0f}" if size >= 100 else f"{value:.1f}" if size >= 1 else f"{value:.2g}" if size >= 0.01 \
        else f"{value:.3f}"


def _did(data_id: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in data_id.items())


def _tooltip(rec: dict[str, Any]) -> str:
    dur = rec["ended"] - rec["started"]
    lines = [f"{rec['task']} {{{_did(rec['data_id'])}}}", f"{rec['state']} · {dur:.2f} s"]
    if rec["cpu_s"] is not None:
        lines[-1] += f" · CPU {rec['cpu_s']:.2f} s"
    if rec["peak_rss_mb"] is not None:
        scope = "" if rec["rss_scope"] == "quantum" else " (worker lifetime)"
        lines[-1] += f" · peak {rec['peak_rss_mb']:.0f} MB{scope}"
    if rec["row"] == LOST:
        lines.append("lost with its worker: bar spans hand-off to Parsl to loss")
    else:
        lines.append(f"{rec['row']} · pid {rec['pid'] if rec['pid'] is not None else '?'}"
                     + (f" · SLURM job {rec['slurm_job_id']}" if rec["slurm_job_id"] else ""))
    if rec["error_kind"] and rec["state"] == "failed":
        lines.append(f"error: {rec['error_kind']}")
    return "\n".join(lines)


def _axis(x0: float, span: float, scale: float, left: float, height: float, unit: str) -> list[str]:
    """Vertical grid lines with labels along the top, from 0 to ``span`` (value units) at ``scale`` px/unit."""
    step = _nice_step(span)
    out = []
    n = int(span / step + 1e-9)
    for i in range(n + 1):
        x = left + (i * step - x0) * scale
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{TOP - 4}" x2="{x:.1f}" y2="{height:.1f}"/>'
                   f'<text class="tick" x="{x:.1f}" y="{TOP - 8}">{_fmt(i * step)}{unit}</text>')
    return out


def timeline_svg(records: list[dict[str, Any]], rows: list[dict[str, Any]], sessions: list[float],
                 colors: dict[str, str]) -> str:
    """One row per worker, one bar per quantum (fill: task; outline and hatching: state), time since the first start."""
    if not records:
        return '<p class="empty">no quantum has run yet</p>'
    t0 = min(r["started"] for r in records)
    span = max(max(r["ended"] for r in records) - t0, 1e-3)
    plot_w = WIDTH - LABEL_W - 30
    scale = plot_w / span
    height = TOP + ROW_H * len(rows) + 6
    y_of = {r["row"]: TOP + i * ROW_H for i, r in enumerate(rows)}
    parts = [f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="100%" '
             f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="run timeline">',
             '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
             'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#b71c1c" stroke-width="3"/>'
             '</pattern></defs>']
    parts += _axis(0.0, span, scale, LABEL_W, height - 4, " s")
    for t in sessions[1:]:  # the first session starts the run; later ones are resumes
        if t0 <= t <= t0 + span:
            x = LABEL_W + (t - t0) * scale
            parts.append(f'<line class="session" x1="{x:.1f}" y1="{TOP - 4}" x2="{x:.1f}" y2="{height}">'
                         f'<title>resumed at {t - t0:.1f} s</title></line>')
    by_row: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_row.setdefault(rec["row"], []).append(rec)
    for row in rows:
        y = y_of[row["row"]]
        parts.append(f'<g class="row" data-row="{escape(row["row"])}">'
                     f'<text class="label" x="{LABEL_W - 6}" y="{y + BAR_H - 2}">{escape(row["row"])}</text>')
        for rec in by_row[row["row"]]:
            x = LABEL_W + (rec["started"] - t0) * scale
            w = max((rec["ended"] - rec["started"]) * scale, 1.0)
            attrs = (f'x="{x:.2f}" y="{y + 1}" width="{w:.2f}" height="{BAR_H}"')
            bar = (f'<rect class="q st-{escape(rec["state"])}" data-qid="{escape(rec["quantum_id"])}" '
                   f'data-task="{escape(rec["task"])}" data-state="{escape(rec["state"])}" {attrs} '
                   f'fill="{colors[rec["task"]]}"><title>{escape(_tooltip(rec))}</title></rect>')
            if rec["state"] == "failed":  # hatched, and a link to its log tail below
                bar = (f'<a href="#q-{escape(rec["quantum_id"])}">{bar}'
                       f'<rect class="hatch" {attrs} fill="url(#hatch)" pointer-events="none"/></a>')
            parts.append(bar)
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def strip_svg(records: list[dict[str, Any]], key: str, unit: str, colors: dict[str, str], what: str) -> str:
    """Per task, one dot per quantum at its ``key`` value, the median marked; empty when nothing was measured."""
    tasks = [t for t in colors if any(r["task"] == t and r[key] is not None for r in records)]
    if not tasks:
        return f'<p class="empty">no {escape(what)} recorded</p>'
    top = max(r[key] for r in records if r[key] is not None)
    plot_w = WIDTH - LABEL_W - 240
    scale = plot_w / (top * 1.05 if top > 0 else 1.0)
    row_h = 26
    height = TOP + row_h * len(tasks) + 6
    parts = [f'<svg class="strip" xmlns="http://www.w3.org/2000/svg" width="100%" '
             f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(what)} per task">']
    parts += _axis(0.0, top * 1.05 if top > 0 else 1.0, scale, LABEL_W, height - 4, f" {unit}")
    for i, task in enumerate(tasks):
        y = TOP + i * row_h
        values = [r for r in records if r["task"] == task and r[key] is not None]
        mid = median(r[key] for r in values)
        parts.append(f'<g class="task" data-task="{escape(task)}">'
                     f'<text class="label" x="{LABEL_W - 6}" y="{y + row_h / 2 + 4}">{escape(task)}</text>')
        for r in values:
            jitter = (zlib.crc32(r["quantum_id"].encode()) % 1000) / 1000 * (row_h - 10)
            parts.append(f'<circle class="v st-{escape(r["state"])}" data-qid="{escape(r["quantum_id"])}" '
                         f'cx="{LABEL_W + r[key] * scale:.2f}" cy="{y + 5 + jitter:.1f}" r="3" '
                         f'fill="{colors[task]}"><title>{escape(task)} {{{escape(_did(r["data_id"]))}}}: '
                         f'{_num(r[key])} {unit} ({escape(r["state"])})</title></circle>')
        xm = LABEL_W + mid * scale
        parts.append(f'<line class="median" x1="{xm:.1f}" y1="{y + 2}" x2="{xm:.1f}" y2="{y + row_h - 2}"/>'
                     f'<text class="stat" x="{WIDTH - 225}" y="{y + row_h / 2 + 4}">median {_num(mid)}, '
                     f'max {_num(max(r[key] for r in values))} {unit} (n={len(values)})</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def legend_html(colors: dict[str, str], states: list[str]) -> str:
    """Task swatches (click to pick out a task's bars) and the state encodings."""
    tasks = "".join(f'<button type="button" class="task-key" data-task="{escape(t)}">'
                    f'<span class="swatch" style="background:{c}"></span>{escape(t)}</button>' for t, c in colors.items())
    keys = {"succeeded": "solid", "failed": "red outline, hatched (click: its log tail)",
            "no_work": "pale, dashed outline", "other": "grey outline (interrupted, lost or still open)"}
    shown = "".join(f'<span class="state-key"><svg width="22" height="12"><rect class="q st-{s}" x="1" y="1" width="20" '
                    f'height="10" fill="#888"/></svg> {escape(s)}: {escape(keys.get(s, keys["other"]))}</span>'
                    for s in states)
    return f'<div class="legend"><div>{tasks}</div><div>{shown}</div></div>'


CSS = ("""
svg.timeline,svg.strip{max-width:%dpx} svg text{font:11px sans-serif} svg .label{text-anchor:end} svg .tick{text-anchor:middle;fill:#555}
svg .grid{stroke:#e4e4e4} svg .session{stroke:#333;stroke-dasharray:4 3}
svg .median{stroke:#000;stroke-width:2} svg .stat{fill:#333}
rect.q{stroke:none} rect.q.st-failed{stroke:#b71c1c;stroke-width:2}
rect.q.st-no_work{fill-opacity:.35;stroke:#555;stroke-dasharray:2 2}
rect.q:not(.st-succeeded):not(.st-failed):not(.st-no_work){fill:#bbb;stroke:#555;stroke-dasharray:1 2}
circle.v{fill-opacity:.7} circle.v.st-failed{stroke:#b71c1c;stroke-width:1.5}
.dim{opacity:.12} rect.q:hover,circle.v:hover{stroke:#000;stroke-width:2}
.legend button{border:1px solid #ccc;background:#fff;margin:2px;padding:2px 6px;cursor:pointer;font:12px sans-serif}
.legend button.on{border-color:#000;font-weight:bold} .swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
.state-key{margin-right:1.2em;font-size:12px} .state-key svg{vertical-align:middle}
""" % WIDTH)

# Clicking a task in the legend picks out its bars and dots; the line under the timeline says how many are shown.
JS = """
(function(){
  var picked=null, keys=document.querySelectorAll('.task-key'), marks=document.querySelectorAll('rect.q[data-qid],circle.v');
  var bars=document.querySelectorAll('svg.timeline rect.q[data-qid]'), rows=document.querySelectorAll('svg.timeline g.row');
  function show(){
    var n=0;
    marks.forEach(function(m){m.classList.toggle('dim', picked!==null && m.dataset.task!==picked);});
    bars.forEach(function(b){ if(picked===null || b.dataset.task===picked) n++; });
    keys.forEach(function(k){k.classList.toggle('on', k.dataset.task===picked);});
    var out=document.getElementById('timeline-shown');
    if(out) out.textContent=n+' of '+bars.length+' quanta shown on '+rows.length+' rows'+(picked?' (task '+picked+')':'');
  }
  keys.forEach(function(k){k.addEventListener('click',function(){picked=(picked===k.dataset.task)?null:k.dataset.task;show();});});
  show();
})();
"""

