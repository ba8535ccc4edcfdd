"""A disk that fills up during a run ends it `failed` with one message; nothing registered is lost and
--resume finishes it once there is space. Runs on a real, small tmpfs (needs root to mount it)."""

import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from testdata import make_small_repo

from openastro_parsl.butler import Butler

FAULTY = Path(__file__).resolve().parents[1] / "pipelines" / "faulty.yaml"
SUBMIT = [sys.executable, "-m", "openastro_parsl.cli.submit_entry"]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path, leave_bytes: int) -> Path:
    filler = mount / f"filler-{uuid.uuid4().hex[:6]}"
    free = shutil.disk_usage(mount).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - leave_bytes, 0))
    return filler


def test_disk_full_stops_the_run_with_one_message_and_resume_finishes(small_disk):
    butler = make_small_repo(small_disk, n=40)
    filler = _fill(small_disk, leave_bytes=1_500_000)  # room for the run's start and a few quanta, not all
    out = subprocess.run(SUBMIT + ["-b", str(butler.root), "-p", f"{FAULTY}#frameStats", "-i", "defaults",
                                   "-o", "u/t/full", "-c", "frameStats:pad_kb=64"],
                         capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Traceback" not in text
    assert text.count("No space left on device") <= 2, text  # one message, not one per quantum
    assert "the run stopped: a disk is full" in out.stderr and "--resume" in out.stderr
    run_dir = next((butler.root / "submit" / "u" / "t" / "full").glob("2*"))
    registered = Butler(butler.root).query_datasets("frameStats", "u/t/full")
    assert len(registered) < 40
    status = sqlite3.connect(run_dir / "status.sqlite3")
    assert status.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()[0] == '"failed"'
    status.close()

    filler.unlink()
    resume = subprocess.run(SUBMIT + ["--resume", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stdout + resume.stderr
    butler = Butler(butler.root)
    refs = butler.query_datasets("frameStats", "u/t/full", find_first=False)
    assert len(refs) == 40 and butler.verify()[1] == []
    assert {r.id for r in registered} <= {r.id for r in refs}
