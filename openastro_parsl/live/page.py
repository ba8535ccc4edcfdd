"""The live status page (``GET /``): one self-contained HTML document, no scripts, no external resources.

It shows the frames of the last hours with their state, the quanta of those frames by state, and the latest
alerts with their cutouts (the ``alertStamps`` PNG of the alert's exposure, inlined as a data URI) — what an
observer checks from a phone at the telescope, so it must render with nothing else reachable. It refreshes
itself every 30 s with a meta tag.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from html import escape
from typing import Any, Iterable, Mapping

from .inbox import FrameRecord

_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;font-size:.9em}
.done{color:#176117}.failed,.quarantined{color:#a11}.processing,.ingested,.accepted{color:#8a5a00}
.alert{display:inline-block;margin:.5em;vertical-align:top;border:1px solid #ccc;padding:.4em}
.alert img{max-width:360px;display:block}
"""


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _data_id(d: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items()) if d else ""


def _frames_table(frames: list[FrameRecord]) -> str:
    if not frames:
        return "<p id='no-frames'>no frames in this period</p>"
    rows = "".join(
        f"<tr class='frame' data-id='{f.id}'><td>{f.id}</td><td>{_utc(f.received)}</td><td>{escape(f.site)}</td>"
        f"<td>{escape(_data_id(f.exposure))}</td><td class='{escape(f.state)}'>{escape(f.state)}</td>"
        f"<td>{len(f.quanta)}</td><td>{escape(f.message or '')}</td></tr>" for f in frames)
    return ("<table id='frames'><tr><th>id</th><th>received (UTC)</th><th>site</th><th>exposure</th>"
            f"<th>state</th><th>quanta</th><th>message</th></tr>{rows}</table>")


def _counts_table(table_id: str, counts: Mapping[str, int], empty: str) -> str:
    if not counts:
        return f"<p id='{table_id}-none'>{escape(empty)}</p>"
    rows = "".join(f"<tr><td class='{escape(k)}'>{escape(k)}</td><td data-state='{escape(k)}'>{n}</td></tr>"
                   for k, n in sorted(counts.items()))
    return f"<table id='{table_id}'><tr><th>state</th><th>count</th></tr>{rows}</table>"


def _alert_card(alert: Mapping[str, Any], stamp: bytes | None) -> str:
    where = alert.get("data_id") or {k: alert[k] for k in ("instrument", "exposure") if k in alert}
    fields = [("alert", alert.get("alert_id")), ("candidate", alert.get("candidate_id")), ("band", alert.get("band")),
              ("mjd", alert.get("mjd")), ("ra", alert.get("ra")), ("dec", alert.get("dec")), ("mag", alert.get("mag")),
              ("rb", alert.get("rb_score"))]
    lines = "".join(f"<div>{k}: {v:.5f}</div>" if isinstance(v, float) else f"<div>{k}: {escape(str(v))}</div>"
                    for k, v in fields if v is not None)
    img = ("<img alt='cutouts' src='data:image/png;base64," + base64.b64encode(stamp).decode() + "'>") if stamp \
        else "<div class='nocutout'>no cutouts stored</div>"
    return f"<div class='alert'><b>{escape(_data_id(where))}</b>{lines}{img}</div>"


def render(name: str, hours: float, frames: list[FrameRecord], quanta: Mapping[str, int], inbox_counts:
           Mapping[str, int], alerts: Iterable[tuple[Mapping[str, Any], bytes | None]], engine: str,
           now: float | None = None) -> str:
    """The page's HTML from what the service knows; ``alerts`` pairs each alert with its cutout PNG (or None)."""
    now = time.time() if now is None else now
    frame_states = Counter(f.state for f in frames)
    cards = "".join(_alert_card(a, png) for a, png in alerts)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='30'>"
        f"<title>openastro live: {escape(name)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>openastro live: {escape(name)}</h1>"
        f"<p id='summary'>{_utc(now)} UTC; engine {escape(engine)}; {sum(inbox_counts.values())} frames in the "
        f"inbox ({escape(', '.join(f'{n} {k}' for k, n in sorted(inbox_counts.items())) or 'none')})</p>"
        f"<h2>Frames in the last {hours:g} h ({len(frames)})</h2>"
        f"{_counts_table('frame-states', frame_states, 'no frames')}{_frames_table(frames)}"
        f"<h2>Quanta by state</h2>{_counts_table('quanta', quanta, 'no quanta')}"
        f"<h2>Latest alerts</h2><div id='alerts'>{cards or '<p id=no-alerts>no alerts in this period</p>'}</div>"
        "</body></html>")
