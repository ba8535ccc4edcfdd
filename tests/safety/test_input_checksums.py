"""Inputs are what was registered (issue 12, item 7): a quantum checks each input file against the checksum
in its graph before reading it. A changed file fails only the quanta that read it, with the file, dataset
type, data ID and both checksums named; a touch or a content-preserving copy passes."""

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from testdata import QA, lco_header, make_transfer_mode_repo, write_frame

from openastro_parsl.cli.report import main as report_main
from openastro_parsl.datastore.checksum import VERIFY_ENV, changed_checksum, file_checksum, verify_mode
from openastro_parsl.errors import OpenAstroError
from openastro_parsl.execution.site import load_site
from openastro_parsl.execution.submit import Submission
from openastro_parsl.graph.planner import Planner
from openastro_parsl.pipeline.pipeline import load_pipeline


def _tamper(path: Path, keep_mtime: bool = False) -> None:
    """Change pixels in place: same size, different content (optionally with the old mtime put back)."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(2880 + 400)  # inside the data unit, after the one header block
        old = f.read(16)
        f.seek(2880 + 400)
        f.write(bytes(b ^ 0xFF for b in old))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size


def _run(butler, output_run):
    graph = Planner(butler, load_pipeline(str(QA)), inputs=["defaults"], output_run=output_run).plan()
    site, src = load_site(None)
    sub = Submission.start(butler, graph, site, src)
    return sub, sub.run()


def _path(butler, exposure):
    (ref,) = butler.query_datasets("raw", "raw/all", where=f"exposure = {exposure}")
    return butler.path(ref), ref.checksum


def test_changed_raws_fail_only_their_quanta_in_every_transfer_mode(tmp_path):
    butler, frames = make_transfer_mode_repo(tmp_path)
    changed = {e: _path(butler, e) for e in (100, 102, 104)}        # copy, symlink, direct; all band g
    for path, _ in changed.values():
        _tamper(path)
    assert changed[102][0].is_symlink() and changed[104][0] == frames[4].resolve()
    os.utime(_path(butler, 101)[0])                                # touched: content unchanged
    orig = frames[3]                                               # symlink target replaced by a copy of itself
    shutil.copy(orig, orig.with_suffix(".tmp"))
    os.replace(orig.with_suffix(".tmp"), orig)

    sub, summary = _run(butler, "u/t/changed")
    t = summary.per_task
    assert (t["frameStats"]["succeeded"], t["frameStats"]["failed"]) == (3, 3)
    assert (t["targetCoverage"]["succeeded"], t["targetCoverage"]["failed"]) == (1, 1)   # band g reads the raws
    assert (t["fieldQa"]["succeeded"], t["fieldQa"]["upstream_failed"]) == (1, 1)
    assert summary.failures_by_kind.get("science") == 4              # deterministic: not retried

    report = json.loads(CliRunner().invoke(report_main, [str(sub.run_dir), "--json"]).output)
    stats = {f["data_id"]["exposure"]: f for f in report["failed"] if f["task"] == "frameStats"}
    assert set(stats) == {100, 102, 104}
    for exposure, (path, expected) in changed.items():
        f = stats[exposure]
        assert f["error_type"] == "InputChecksumError" and f["attempts"] == 1
        message = f["message"]
        assert str(path) in message and "raw" in message and f"'exposure': {exposure}" in message
        assert expected in message and file_checksum(path) in message
    out = CliRunner().invoke(report_main, [str(sub.run_dir), "--failed"])
    assert out.exit_code == 0 and "InputChecksumError" in out.output and str(changed[100][0]) in out.output
    done = {r.data_id["exposure"] for r in butler.query_datasets("frameStats", "u/t/changed")}
    assert done == {101, 103, 105}


def test_verification_mode_reaches_the_workers(tmp_path, monkeypatch):
    """off: the setting is honoured by the workers; full: an edit that keeps size and mtime is still caught."""
    butler, _ = make_transfer_mode_repo(tmp_path)
    path, _ = _path(butler, 101)
    _tamper(path, keep_mtime=True)
    monkeypatch.setenv(VERIFY_ENV, "off")
    _, summary = _run(butler, "u/t/off")
    assert summary.ok
    monkeypatch.setenv(VERIFY_ENV, "full")
    sub, summary = _run(butler, "u/t/full")
    t = summary.per_task
    assert (t["frameStats"]["succeeded"], t["frameStats"]["failed"]) == (5, 1)
    (row,) = [r for r in sub.status.rows() if r["state"] == "failed" and r["task"] == "frameStats"]
    assert row["error_type"] == "InputChecksumError" and "101" in row["data_id"]


def test_changed_checksum_modes(tmp_path, monkeypatch):
    f = write_frame(tmp_path / "f.fits", lco_header(1))
    good = file_checksum(f)
    st = os.stat(f)
    assert changed_checksum(f, good) is None
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))       # touch: hashed again, still the same
    assert changed_checksum(f, good) is None
    _tamper(f, keep_mtime=True)
    bad = file_checksum(f)
    assert changed_checksum(f, good) == bad                         # no recorded stat: same size -> hashed
    assert changed_checksum(f, good, mode="full") == bad
    # With the size and mtime recorded alongside the checksum the fast path trusts them (by design, the one
    # edit it cannot see is one that restores both); full mode still hashes.
    same = os.stat(f)
    assert changed_checksum(f, good, size=same.st_size, mtime_ns=same.st_mtime_ns) is None
    assert changed_checksum(f, good, size=same.st_size, mtime_ns=same.st_mtime_ns, mode="full") == bad
    assert changed_checksum(f, good, mode="off") is None
    assert changed_checksum(tmp_path / "gone.fits", good) == "missing"
    monkeypatch.setenv(VERIFY_ENV, "Full")
    assert verify_mode() == "full"
    monkeypatch.setenv(VERIFY_ENV, "sometimes")
    with pytest.raises(OpenAstroError, match="OPENASTRO_VERIFY_INPUTS='sometimes': choose one of off, fast, full"):
        verify_mode()
