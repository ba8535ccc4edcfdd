"""Ctrl-C, SIGTERM and SIGKILL of a real `openastro-submit`: the run stops in order and leaves no Parsl process.

Each test starts the submit in a session of its own (as a terminal starts a job), so every process it made —
interchange, LocalProvider block, worker pool, workers — is found by its session id in /proc.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from testdata import make_small_repo

from openastro_parsl.butler import Butler

FAULTY = Path(__file__).resolve().parents[1] / "pipelines" / "faulty.yaml"
SUBMIT = [sys.executable, "-m", "openastro_parsl.cli.submit_entry"]
N = 8


def _session(sid: int) -> list[tuple[int, str]]:
    """Live (not zombie) processes of a session: pid and command line."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append((int(d.name), cmd))
    return out


def _wait_session_empty(sid: int, within: float) -> float:
    t0 = time.monotonic()
    while _session(sid):
        assert time.monotonic() - t0 < within, f"left behind after {within} s: {_session(sid)}"
        time.sleep(0.2)
    return time.monotonic() - t0


def _query(status_db: Path, sql: str):
    con = sqlite3.connect(status_db, timeout=10)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _state(status_db: Path):
    rows = _query(status_db, "SELECT value FROM meta WHERE key='state'")
    return json.loads(rows[0][0]) if rows else None


@pytest.fixture
def sessions():
    """Session ids of the submits a test started; whatever of them is still alive at the end is killed."""
    sids: list[int] = []
    yield sids
    for sid in sids:
        for pid, _ in _session(sid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _start(tmp_path: Path, sessions: list[int], sleep_s: float = 1.0):
    """A submit of N quanta in its own session, returned once two quanta succeeded and others are running."""
    butler = make_small_repo(tmp_path, n=N)
    out = tmp_path / "submit.out"
    proc = subprocess.Popen(SUBMIT + ["-b", str(butler.root), "-p", f"{FAULTY}#frameStats", "-i", "defaults",
                                      "-o", "u/t/stop", "-c", f"frameStats:sleep_s={sleep_s}"],
                            start_new_session=True, stdout=out.open("w"), stderr=subprocess.STDOUT)
    sessions.append(proc.pid)
    runs = butler.root / "submit" / "u" / "t" / "stop"
    deadline = time.time() + 120
    while time.time() < deadline:
        dbs = list(runs.glob("*/status.sqlite3")) if runs.exists() else []
        try:
            if dbs and _query(dbs[0], "SELECT COUNT(*) FROM quantum WHERE state='succeeded'")[0][0] >= 2:
                return butler, proc, dbs[0], out
        except sqlite3.Error:
            pass
        assert proc.poll() is None, out.read_text()
        time.sleep(0.2)
    pytest.fail("the run never got going")


def _succeeded(status_db: Path) -> set[str]:
    return {r[0] for r in _query(status_db, "SELECT id FROM quantum WHERE state='succeeded'")}


def _resume_finishes(butler: Butler, status_db: Path, done_before: set[str]) -> None:
    """--resume runs what is left: every quantum once, what had finished not again, the repository clean."""
    resume = subprocess.run(SUBMIT + ["--resume", str(status_db.parent)], capture_output=True, text=True, timeout=180)
    assert resume.returncode == 0, resume.stdout + resume.stderr
    butler = Butler(butler.root)
    refs = butler.query_datasets("frameStats", "u/t/stop", find_first=False)
    assert len(refs) == N and len({r.data_id["exposure"] for r in refs}) == N
    rows = dict(_query(status_db, "SELECT id, attempts FROM quantum WHERE state='succeeded'"))
    assert len(rows) == N and all(rows[q] == 1 for q in done_before)
    assert _state(status_db) == "finished"
    assert butler.verify()[1] == []


def _assert_interrupted(proc, status_db: Path, out: Path, signame: str) -> None:
    assert proc.returncode == 128 + signal.Signals[signame], out.read_text()
    assert _state(status_db) == "interrupted"
    summary = json.loads((status_db.parent / "summary.json").read_text())
    assert summary["interrupted"] == signame and not summary["ok"]
    assert _query(status_db, "SELECT COUNT(*) FROM quantum WHERE state='running'")[0][0] == 0  # cut ones are pending
    text = out.read_text()
    assert f"interrupted ({signame})" in text and f"--resume {status_db.parent}" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("signame, to_group", [("SIGINT", True), ("SIGTERM", False), ("SIGTERM", True)],
                         ids=["ctrl-c-to-group", "sigterm-to-submit", "sigterm-to-group"])
def test_one_signal_stops_the_run_in_order(tmp_path, sessions, signame, to_group):
    """Ctrl-C as a terminal sends it (the whole process group), or SIGTERM: the submit ends within 30 s,
    the run is `interrupted` with a summary and a --resume hint, no Parsl process is left, resume finishes."""
    butler, proc, status_db, out = _start(tmp_path, sessions)
    (os.killpg if to_group else os.kill)(proc.pid, signal.Signals[signame])
    t0 = time.monotonic()
    proc.wait(timeout=30)
    took = time.monotonic() - t0
    _assert_interrupted(proc, status_db, out, signame)
    _wait_session_empty(proc.pid, within=10)
    print(f"{signame}: submit ended in {took:.1f} s")
    _resume_finishes(butler, status_db, _succeeded(status_db))


@pytest.mark.parametrize("second_ctrl_c", [True, False], ids=["second-ctrl-c", "cleanup-time-limit"])
def test_hung_parsl_cleanup_is_bounded(tmp_path, sessions, second_ctrl_c):
    """An interchange that does not answer (stopped with SIGSTOP) used to make dfk.cleanup() wait forever.
    The run's state and summary are written before that cleanup; a second Ctrl-C ends it at once, and
    without one it ends on its own time limit; either way no Parsl process is left."""
    butler, proc, status_db, out = _start(tmp_path, sessions)
    interchange = [pid for pid, cmd in _session(proc.pid) if "interchange" in cmd]
    assert len(interchange) == 1, _session(proc.pid)
    os.kill(interchange[0], signal.SIGSTOP)
    os.killpg(proc.pid, signal.SIGINT)
    deadline = time.time() + 10
    while _state(status_db) != "interrupted":
        assert time.time() < deadline and proc.poll() is None, out.read_text()
        time.sleep(0.1)
    assert (status_db.parent / "summary.json").exists()  # written before anything that can block
    time.sleep(1.0)
    assert proc.poll() is None  # Parsl's cleanup is stuck on the stopped interchange
    t0 = time.monotonic()
    if second_ctrl_c:
        os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=10 if second_ctrl_c else 30)
    print(f"second Ctrl-C={second_ctrl_c}: submit ended {time.monotonic() - t0:.1f} s later")
    _assert_interrupted(proc, status_db, out, "SIGINT")
    _wait_session_empty(proc.pid, within=10)
    _resume_finishes(butler, status_db, _succeeded(status_db))


def test_orphans_exit_after_sigkill_of_submit(tmp_path, sessions):
    """SIGKILL of the submit process alone: its interchange notices and shuts the worker pool down, so no
    Parsl process goes on running quanta (and writing files) while a --resume runs; the resume is clean."""
    butler, proc, status_db, out = _start(tmp_path, sessions, sleep_s=2.0)
    assert any("process_worker_pool" in cmd for _, cmd in _session(proc.pid))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    took = _wait_session_empty(proc.pid, within=60)
    print(f"interchange and worker pool gone {took:.1f} s after the SIGKILL")
    _resume_finishes(butler, status_db, _succeeded(status_db))
