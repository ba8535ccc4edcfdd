"""The run report's timeline and resources, from a real run through Parsl HTEX rendered in a real headless browser.

One small run (six frames, one of them made to fail: the session's ``failed_runs.shared()`` of conftest.py, which
test_submit.py's failure report reads too) serves every test of the module. Chromium is Debian's
(installed by bin/setup): without it the browser test fails, it never passes silently.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import chromium, chromium_dom
from click.testing import CliRunner

from openastro_parsl.cli.report import main as report_main
from openastro_parsl.execution.report import write_html
from openastro_parsl.execution.report_svg import LABEL_W
from openastro_parsl.execution.status import StatusStore


@pytest.fixture(scope="module")
def run(failed_runs):
    """A finished run on the local HTEX site: 5 frameStats succeed, exposure 101 fails, what needs it is blocked."""
    failed = failed_runs.shared()
    assert not failed.summary.ok
    return failed.sub.run_dir


def _report(run_dir: Path) -> dict:
    result = CliRunner().invoke(report_main, [str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_json_has_every_quantum_that_ran_with_where_and_cost(run):
    report = _report(run)
    status = StatusStore(run / "status.sqlite3")
    ran = {r["id"]: r for r in status.rows("WHERE state IN ('succeeded', 'failed', 'no_work')")}
    quanta = {q["quantum_id"]: q for q in report["quanta"]}
    assert set(quanta) == set(ran) and len(ran) == 5 + 1 + 5 + 1 + 2  # blocked quanta never ran: no bar
    assert {q["state"] for q in quanta.values()} == {"succeeded", "failed"}
    for q in quanta.values():
        assert q["host"] and q["pid"] > 0 and q["block_id"] == "0" and q["worker_rank"] is not None
        assert q["started"] <= q["ended"] and q["wall_s"] == pytest.approx(q["ended"] - q["started"], abs=2e-3)
        assert 0 <= q["cpu_s"] and q["peak_rss_mb"] > 10 and q["rss_scope"] == "quantum"
        assert q["row"] == f"{q['host']} · block 0 · worker {q['worker_rank']}"
    (failed,) = [q for q in quanta.values() if q["state"] == "failed"]
    assert failed["task"] == "frameStats" and failed["data_id"]["exposure"] == 101 and failed["error_kind"] == "science"
    # the workers' rows account for every quantum, and no worker ran two quanta at once
    assert sum(w["quanta"] for w in report["workers"]) == len(quanta)
    assert {w["row"] for w in report["workers"]} == {q["row"] for q in quanta.values()}
    for w in report["workers"]:
        bars = sorted((q["started"], q["ended"]) for q in quanta.values() if q["row"] == w["row"])
        assert all(a[1] <= b[0] + 1e-3 for a, b in zip(bars, bars[1:], strict=False))
    assert len(report["sessions"]) == 1
    # a quantum's start is the worker's, not when it was handed to Parsl: its log's first record is after it
    first = json.loads(Path(ran[failed["quantum_id"]]["jsonl"]).read_text().splitlines()[0])
    assert failed["started"] <= first["time"] + 1e-3 <= failed["ended"] + 1e-3


class _Bars(HTMLParser):
    """The timeline's rows and bars as the browser left them in the DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[dict[str, str]]] = {}
        self.row: str | None = None
        self.shown = ""
        self._in_shown = False
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "g" and "row" in (a.get("class") or "").split():
            self.row = a["data-row"]
            self.rows[self.row] = []
        elif tag == "rect" and "data-qid" in a and self.row is not None:
            self.rows[self.row].append(a)
        elif tag == "p" and a.get("id") == "timeline-shown":
            self._in_shown = True
        for key in ("src", "href"):
            if a.get(key) and not a[key].startswith(("#", "data:")):
                self.external.append(f"{tag} {key}={a[key]}")

    def handle_endtag(self, tag):
        if tag == "g":
            self.row = None
        elif tag == "p":
            self._in_shown = False

    def handle_data(self, data):
        if self._in_shown:
            self.shown += data


def test_html_timeline_in_headless_chromium(run, tmp_path):
    page = tmp_path / "report.html"
    result = CliRunner().invoke(report_main, [str(run), "--html", str(page)])
    assert result.exit_code == 0, result.output
    report = _report(run)
    dom = chromium_dom(page.as_uri(), tmp_path, loopback=False)  # any fetch, even from 127.0.0.1, fails
    bars = _Bars()
    bars.feed(dom)
    assert bars.external == []  # one self-contained file: no script, style, image or font fetched
    # every quantum that ran is one bar, in the row of the worker that ran it
    rendered = {b["data-qid"]: (row, b) for row, found in bars.rows.items() for b in found}
    assert set(rendered) == {q["quantum_id"] for q in report["quanta"]}
    assert len(rendered) == sum(len(found) for found in bars.rows.values())  # no quantum drawn twice
    assert list(bars.rows) == [w["row"] for w in report["workers"]]
    for q in report["quanta"]:
        row, bar = rendered[q["quantum_id"]]
        assert row == q["row"] and bar["data-task"] == q["task"] and bar["data-state"] == q["state"]
    # the page's script ran in the browser and counted the bars it laid out
    n, workers = len(report["quanta"]), len(report["workers"])
    assert bars.shown.strip() == f"{n} of {n} quanta shown on {workers} rows"
    # bars are placed in time: the earliest starts at the left edge of the plot, and longer is wider
    first = min(report["quanta"], key=lambda q: q["started"])
    assert float(rendered[first["quantum_id"]][1]["x"]) == pytest.approx(LABEL_W, abs=0.01)
    longest = max(report["quanta"], key=lambda q: q["ended"] - q["started"])
    widths = {qid: float(bar["width"]) for qid, (_, bar) in rendered.items()}
    # the longest quantum has the widest bar (two quanta of the same rounded length may tie)
    assert widths[longest["quantum_id"]] == pytest.approx(max(widths.values()), abs=0.05)
    # the failed quantum's bar links to its log tail, which is on the page
    (failed,) = report["failed"]
    assert f'href="#q-{failed["quantum_id"]}"' in dom and f'id="q-{failed["quantum_id"]}"' in dom
    assert "injected failure for exposure 101" in dom
    # CPU and memory plots: one dot per quantum in each
    assert len(re.findall(r'<circle class="v[^"]*" data-qid=', dom)) == 2 * n
    shot = tmp_path / "report.png"
    chromium(page.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", loopback=False)
    assert shot.stat().st_size > 10_000


def test_old_status_store_is_migrated_and_reported(run, tmp_path):
    """A run directory from before workers reported their identity: columns added as NULL, lanes per host."""
    old = tmp_path / "old"
    shutil.copytree(run, old)
    conn = sqlite3.connect(old / "status.sqlite3")
    cols = [r[1] for r in conn.execute("PRAGMA table_info(quantum)")]
    keep = [c for c in cols if c not in ("block_id", "pid", "worker_rank", "pool_id", "rss_scope")]
    conn.executescript(f"CREATE TABLE q2 AS SELECT {', '.join(keep)} FROM quantum; DROP TABLE quantum; "
                       "ALTER TABLE q2 RENAME TO quantum;")
    conn.close()
    report = _report(old)
    assert len(report["quanta"]) == 14
    for q in report["quanta"]:
        assert q["worker_rank"] is None and q["block_id"] is None and q["rss_scope"] is None
        assert q["row"].startswith(f"{q['host']} · lane ") and q["row"].endswith("(no worker id recorded)")
    lanes = {q["row"] for q in report["quanta"]}
    for lane in lanes:  # packed: no two bars of a lane overlap
        bars = sorted((q["started"], q["ended"]) for q in report["quanta"] if q["row"] == lane)
        assert all(a[1] <= b[0] for a, b in zip(bars, bars[1:], strict=False))
    cols = [r[1] for r in StatusStore(old / "status.sqlite3").conn.execute("PRAGMA table_info(quantum)")]
    assert {"block_id", "pid", "worker_rank", "pool_id", "rss_scope"} <= set(cols)
    page = write_html(old, tmp_path / "old.html")
    assert "could not reset its high-water mark" in page.read_text()
