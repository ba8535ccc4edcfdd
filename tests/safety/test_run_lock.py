"""One writer per output run: a second submit or resume is refused while the first lives, taken over after it died."""

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from testdata import make_small_repo

from openastro_parsl.butler import Butler
from openastro_parsl.cli.report import status_main
from openastro_parsl.execution import runlock
from openastro_parsl.execution.runlock import RunLock, RunLockedError

FAULTY = Path(__file__).resolve().parents[1] / "pipelines" / "faulty.yaml"
SUBMIT = [sys.executable, "-m", "openastro_parsl.cli.submit_entry"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_lock_in_a_live_process_is_refused_with_its_holder(tmp_path):
    first = RunLock(tmp_path, "u/a/run", tmp_path / "rundir").acquire()
    try:
        with pytest.raises(RunLockedError) as err:
            RunLock(tmp_path, "u/a/run").acquire()
        text = str(err.value)
        assert f"pid {os.getpid()}" in text and socket.gethostname() in text and "rundir" in text
        assert "u/a/run" in text
        RunLock(tmp_path, "u/a/other").acquire().release()  # other runs are free
    finally:
        first.release()
    assert not runlock.lock_path(tmp_path, "u/a/run").exists()
    RunLock(tmp_path, "u/a/run").acquire().release()  # free again once released


def test_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path):
    path = runlock.lock_path(tmp_path, "u/a/run")
    path.parent.mkdir(parents=True)
    pid = _dead_pid()
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "started": time.time() - 60}))
    notes = []
    lock = RunLock(tmp_path, "u/a/run", notify=notes.append).acquire()
    try:
        assert len(notes) == 1 and f"pid {pid}" in notes[0] and "gone" in notes[0]
        assert json.loads(path.read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_reused_pid_does_not_keep_a_lock(tmp_path):
    """The pid is alive (it is ours) but started at another time: a reused pid, the holder is gone."""
    path = runlock.lock_path(tmp_path, "r")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "pid_start": "1"}))
    RunLock(tmp_path, "r").acquire().release()


def test_lock_from_another_host_lives_by_its_heartbeat(tmp_path):
    path = runlock.lock_path(tmp_path, "r")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": "login2.example", "pid": 4242, "started": time.time()}))
    with pytest.raises(RunLockedError, match="login2.example"):
        RunLock(tmp_path, "r").acquire()
    old = time.time() - runlock.STALE_S - 10
    os.utime(path, (old, old))
    notes = []
    RunLock(tmp_path, "r", notify=notes.append).acquire().release()
    assert "login2.example" in notes[0]


def test_torn_young_lock_counts_as_held(tmp_path):
    path = runlock.lock_path(tmp_path, "r")
    path.parent.mkdir(parents=True)
    path.write_text('{"host": ')  # being written by a process that just took it
    with pytest.raises(RunLockedError):
        RunLock(tmp_path, "r").acquire()


def test_heartbeat_refreshes_the_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "HEARTBEAT_S", 0.1)
    lock = RunLock(tmp_path, "r").acquire()
    try:
        path = runlock.lock_path(tmp_path, "r")
        old = time.time() - 1000
        os.utime(path, (old, old))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 5
    finally:
        lock.release()


def _plan(butler, run, path, overrides):
    from openastro_parsl.graph.planner import Planner
    from openastro_parsl.pipeline.pipeline import load_pipeline

    graph = Planner(butler, load_pipeline(f"{FAULTY}#frameStats", overrides), inputs=["defaults"], output_run=run).plan()
    graph.save(path)
    return str(path)


def _count(status_db: Path, state: str) -> int:
    con = sqlite3.connect(status_db, timeout=5)
    try:
        return con.execute("SELECT COUNT(*) FROM quantum WHERE state = ?", (state,)).fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def _start_slow_submit(butler, run, qgraph=None, state="succeeded"):
    """A submit in a session of its own, returned once one of its quanta is in ``state``."""
    cmd = SUBMIT + (["--qgraph", qgraph] if qgraph else
                    ["-b", str(butler.root), "-p", f"{FAULTY}#frameStats", "-i", "defaults", "-o", run,
                     "-c", "frameStats:sleep_s=1.0"])
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runs = butler.root / "submit" / run
    deadline = time.time() + 120
    while time.time() < deadline:
        dbs = list(runs.glob("*/status.sqlite3")) if runs.exists() else []
        if dbs and _count(dbs[0], state) >= 1:
            return proc, dbs[0].parent
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    raise AssertionError("the first submit never got going")


@pytest.mark.both_backends
def test_two_submits_and_an_early_resume_on_one_run_never_both_write(tmp_path):
    butler = make_small_repo(tmp_path, n=8)
    hold = tmp_path / "hold"
    hold.touch()  # every quantum waits while it exists: the first submit lives until the checks are done
    qgraph = _plan(butler, "u/t/shared", tmp_path / "shared.qgraph",  # planned once, submitted twice
                   ["frameStats:fail_exposures=[100,101,102,103,104,105,106,107]", f"frameStats:marker={hold}",
                    "frameStats:fault=hold"])
    first, run_dir = _start_slow_submit(butler, "u/t/shared", qgraph, state="running")
    try:
        second = subprocess.run(SUBMIT + ["--qgraph", qgraph], capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert "Traceback" not in second.stderr
        assert f"pid {first.pid}" in second.stderr and socket.gethostname() in second.stderr
        assert len(list((butler.root / "submit" / "u/t/shared").glob("2*"))) == 1  # no second run directory
        early = subprocess.run(SUBMIT + ["--resume", str(run_dir)], capture_output=True, text=True, timeout=120)
        assert early.returncode == 1 and f"pid {first.pid}" in early.stderr
        assert first.poll() is None
        assert _count(run_dir / "status.sqlite3", "succeeded") == 0  # the checks above ran mid-run
    finally:
        hold.unlink(missing_ok=True)
        out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    butler = Butler(butler.root)
    assert len(butler.query_datasets("frameStats", "u/t/shared", find_first=False)) == 8
    assert butler.verify()[1] == []
    assert not runlock.lock_path(butler.root, "u/t/shared").exists()


def test_status_says_dead_and_resume_takes_over_after_sigkill(tmp_path):
    butler = make_small_repo(tmp_path, n=8)
    first, run_dir = _start_slow_submit(butler, "u/t/killed")
    assert "running" in CliRunner().invoke(status_main, [str(run_dir)]).output
    os.kill(first.pid, signal.SIGKILL)  # the submit alone: the lock file stays behind, its holder gone
    first.wait()
    try:
        status = CliRunner().invoke(status_main, [str(run_dir)])
        assert status.exit_code == 0 and "dead" in status.output
        resume = subprocess.run(SUBMIT + ["--resume", str(run_dir)], capture_output=True, text=True, timeout=300)
        assert resume.returncode == 0, resume.stdout + resume.stderr
        assert "taking over" in resume.stderr and f"pid {first.pid}" in resume.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)  # whatever Parsl left of the killed submit
    butler = Butler(butler.root)
    assert len(butler.query_datasets("frameStats", "u/t/killed", find_first=False)) == 8
    assert butler.verify()[1] == []
    assert "finished" in CliRunner().invoke(status_main, [str(run_dir)]).output
