"""The submit process itself killed with SIGKILL mid-run; --resume finishes the run without duplicates (on this
machine, on both registry backends, and on the local SLURM: the ``site_path`` fixture)."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from testdata import make_small_repo, succeeded_count

from openastro_parsl.butler import Butler

FAULTY = Path(__file__).resolve().parents[1] / "pipelines" / "faulty.yaml"
pytestmark = pytest.mark.both_backends


def test_resume_after_sigkill_of_submit(tmp_path, site_path):
    """On SLURM the killed submit's pilot job outlives it for a while (until its workers miss the interchange's
    heartbeats): the resume's new block queues behind it and the run still finishes, each quantum once."""
    butler = make_small_repo(tmp_path, n=8)
    cmd = [sys.executable, "-m", "openastro_parsl.cli.submit_entry", "-b", str(butler.root), "-p", f"{FAULTY}#frameStats",
           "-i", "defaults", "-o", "u/t/killed", "-c", "frameStats:sleep_s=1.0", "--site", str(site_path)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runs = butler.root / "submit" / "u" / "t" / "killed"
    deadline = time.time() + 120
    status_db = None
    while time.time() < deadline:
        dbs = list(runs.glob("*/status.sqlite3")) if runs.exists() else []
        if dbs and succeeded_count(dbs[0]) >= 2:
            status_db = dbs[0]
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    assert status_db is not None, "the run never got going"
    os.killpg(proc.pid, signal.SIGKILL)  # the submit process and every Parsl process it started
    proc.wait()
    done_before = succeeded_count(status_db)
    assert 2 <= done_before < 8
    con = sqlite3.connect(status_db)
    first_ids = {r[0] for r in con.execute("SELECT id FROM quantum WHERE state='succeeded'")}
    con.close()

    resume = subprocess.run([sys.executable, "-m", "openastro_parsl.cli.submit_entry", "--resume", str(status_db.parent),
                             "--site", str(site_path)], capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stdout + resume.stderr
    butler = Butler(butler.root)
    refs = butler.query_datasets("frameStats", "u/t/killed", find_first=False)
    assert len(refs) == 8 and len({r.data_id["exposure"] for r in refs}) == 8  # every quantum once, no duplicates
    con = sqlite3.connect(status_db)
    rows = {r[0]: (r[1], r[2]) for r in con.execute("SELECT id, state, attempts FROM quantum")}
    assert all(state == "succeeded" for state, _ in rows.values())
    assert all(rows[q][1] == 1 for q in first_ids)  # what had finished was not run again
    assert butler.verify()[1] == []
