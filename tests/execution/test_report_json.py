"""The timeline's data and drawings from a status store written as the submit loop writes it (no Parsl), and the
per-quantum CPU and memory measurement of the worker."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from openastro_parsl.execution.report_svg import LABEL_W, WIDTH, strip_svg, task_colors, timeline_svg
from openastro_parsl.execution.status import StatusStore, worker_fields
from openastro_parsl.execution.timeline import LOST, quantum_records, timeline_json, worker_rows
from openastro_parsl.execution.usage import QuantumUsage, worker_identity

T0 = 1_800_000_000.0


def _manifest(start, end, host="n1", block="0", rank=0, pid=100, cpu=0.5, rss=300.0):
    return {"started": T0 + start, "ended": T0 + end, "wall": end - start, "cpu": cpu, "maxrss_mb": rss,
            "rss_scope": "quantum", "host": host, "pid": pid, "block_id": block, "worker_rank": rank,
            "pool_id": "p1", "slurm_job_id": "77" if host != "n1" else None}


@pytest.fixture
def store(tmp_path):
    """Six quanta: three on worker 0 and one on worker 1 of block 0, one on block 10, one lost with its worker."""
    st = StatusStore(tmp_path / "status.sqlite3")
    logs = {"stdout": "o", "stderr": "e", "jsonl": "j"}
    st.add_quanta([(f"q{i}", "calibrate" if i < 4 else "coadd", {"exposure": i}, logs) for i in range(6)])
    st.update_many([f"q{i}" for i in range(6)], state="running", started=T0 - 5)  # as handed to Parsl
    st.conn.execute("INSERT INTO event (time, kind, detail) VALUES (?, 'start', '{}')", (T0 - 6,))
    done = [("q0", _manifest(0, 2)), ("q1", _manifest(2, 3, cpu=0.9, rss=420.0)), ("q2", _manifest(1, 4, rank=1)),
            ("q3", _manifest(3.5, 6)), ("q4", _manifest(0.5, 1.5, host="n2", block="10", rank=0, pid=7))]
    st.update_rows([(q, {"state": "succeeded", **worker_fields(m)}) for q, m in done])
    st.update("q5", state="failed", error_kind="lost_worker", **worker_fields({"ended": T0 + 6}))
    st.conn.execute("INSERT INTO event (time, kind, detail) VALUES (?, 'start', '{}')", (T0 + 3.2,))  # a resume
    return st


def test_records_carry_where_when_and_cost(store):
    records = {r["quantum_id"]: r for r in quantum_records(store)}
    assert list(records) == ["q5", "q0", "q4", "q2", "q1", "q3"]  # start order; q5 kept its hand-off time
    q1 = records["q1"]
    assert (q1["started"], q1["ended"], q1["cpu_s"], q1["peak_rss_mb"]) == (T0 + 2, T0 + 3, 0.9, 420.0)
    assert q1["row"] == "n1 · block 0 · worker 0" and q1["data_id"] == {"exposure": 1} and q1["pid"] == 100
    assert records["q4"]["row"] == "n2 · block 10 · worker 0" and records["q4"]["slurm_job_id"] == "77"
    assert records["q5"]["row"] == LOST and records["q5"]["started"] == T0 - 5 and records["q5"]["host"] is None


def test_rows_in_host_block_rank_order_with_busy_time(store):
    rows = worker_rows(quantum_records(store))
    assert [r["row"] for r in rows] == ["n1 · block 0 · worker 0", "n1 · block 0 · worker 1", "n2 · block 10 · worker 0",
                                        LOST]
    assert [(r["quanta"], r["busy_s"]) for r in rows] == [(3, 5.5), (1, 3.0), (1, 1.0), (1, 11.0)]


def test_report_json_shape_is_json(store):
    data = timeline_json(store)
    assert set(data) == {"quanta", "workers", "sessions"} and len(data["sessions"]) == 2
    back = json.loads(json.dumps(data))
    assert back["quanta"][1]["quantum_id"] == "q0" and back["workers"][0]["quanta"] == 3


def test_pending_quanta_have_no_bar(store):
    store.add_quanta([("q9", "coadd", {"exposure": 9}, {"stdout": "o", "stderr": "e", "jsonl": "j"})])
    assert "q9" not in {r["quantum_id"] for r in quantum_records(store)}


def test_timeline_svg_places_bars_in_time_and_rows(store):
    records = quantum_records(store)
    rows = worker_rows(records)
    svg = timeline_svg(records, rows, timeline_json(store)["sessions"], task_colors(["calibrate", "coadd"]))
    bars = {m["qid"]: m for m in re.finditer(
        r'<rect class="q st-(?P<state>\w+)" data-qid="(?P<qid>\w+)" data-task="(?P<task>\w+)" data-state="\w+" '
        r'x="(?P<x>[\d.]+)" y="(?P<y>[\d.]+)" width="(?P<w>[\d.]+)"', svg)}
    assert set(bars) == {f"q{i}" for i in range(6)}
    scale = (WIDTH - LABEL_W - 30) / 11.0  # the run spans T0 - 5 (q5 handed off) to T0 + 6
    assert float(bars["q0"]["x"]) == pytest.approx(LABEL_W + 5 * scale, abs=0.01)
    assert float(bars["q2"]["w"]) == pytest.approx(3 * scale, abs=0.01)
    assert bars["q0"]["y"] == bars["q1"]["y"] == bars["q3"]["y"] != bars["q2"]["y"]  # one row per worker
    assert svg.count("<title>resumed at") == 1  # the second session
    assert '<a href="#q-q5">' in svg and svg.count("fill=\"url(#hatch)\"") == 1  # the failed bar links to its log
    assert "calibrate {exposure=1}\nsucceeded · 1.00 s · CPU 0.90 s · peak 420 MB" in svg


def test_strip_svg_one_dot_per_measured_quantum_and_median(store):
    records = quantum_records(store)
    svg = strip_svg(records, "peak_rss_mb", "MB", task_colors(["calibrate", "coadd"]), "peak memory")
    assert svg.count("<circle") == 5  # q5 was lost: nothing measured
    assert "median 300, max 420 MB (n=4)" in svg and "median 300, max 300 MB (n=1)" in svg
    assert "no CPU time recorded" in strip_svg([], "cpu_s", "s", {}, "CPU time")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def test_usage_counts_this_quantums_peak_not_the_workers():
    before = _rss_mb()
    big = np.ones(200 * 2**20 // 8)  # an earlier quantum's 200 MB, since freed
    del big
    usage = QuantumUsage()
    small = np.ones(40 * 2**20 // 8)
    t_end = time.process_time() + 0.15
    while time.process_time() < t_end:
        pass
    out = usage.finish()
    del small
    assert out["rss_scope"] == "quantum"  # Linux lets a process reset its own high-water mark
    assert before + 35 < out["maxrss_mb"] < before + 150
    assert 0.14 < out["cpu"] < 1.5


def test_usage_counts_subprocess_cpu():
    usage = QuantumUsage()
    subprocess.run([sys.executable, "-c", "import time\nt=time.process_time()+0.2\nwhile time.process_time()<t: pass"],
                   check=True)
    assert usage.finish()["cpu"] >= 0.2


def test_worker_identity_from_parsl_environment(monkeypatch):
    monkeypatch.setenv("PARSL_WORKER_RANK", "3")
    monkeypatch.setenv("PARSL_WORKER_BLOCK_ID", "2")
    monkeypatch.setenv("PARSL_WORKER_POOL_ID", "abc")
    ident = worker_identity()
    assert (ident["worker_rank"], ident["block_id"], ident["pool_id"]) == (3, "2", "abc") and ident["pid"] > 0
