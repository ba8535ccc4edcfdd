"""`openastro-butler ingest` on real headers: an unrecognised frame gets one line, its cards and a translator to
paste (and pasting it works); --field places frames that name no object; and end to end, real-header frames
(LCO BANZAI .fits.fz, N.I.N.A., SharpCap, the real MaxIm DL M13 frame) ingested by the CLI run through
`openastro-submit`."""

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from data.real.frames import frame_from_header
from testdata import QA, REAL_DATA, write_frame

from openastro_parsl.butler import Butler
from openastro_parsl.cli.butler import main

SUBMIT = [sys.executable, "-m", "openastro_parsl.cli.submit_entry"]
ATIK = {"CAMERA": "Atik 414EX", "SWCREATE": "Artemis Capture 3.1.2", "DATE_OBS": "2024-03-01T20:11:12.5Z",
        "EXPOSURE": 30.0, "FILTER": "V", "OBJECT": "M 13", "IMAGETYP": "Light Frame"}


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_unmatched_frame_is_one_line_with_its_cards_and_a_translator_to_paste(tmp_path):
    repo = tmp_path / "repo"
    run("create", repo)
    frame = write_frame(tmp_path / "atik.fits", ATIK)
    code, out = run("ingest", repo, frame)
    assert code == 0
    lines = out.splitlines()
    refused = [ln for ln in lines if ln.startswith("quarantined")]
    assert len(refused) == 1 and "atik.fits: no header translator matches" in refused[0]
    assert "catch-all generic cannot read it (no instrument in header" in refused[0]
    assert "    CAMERA = 'Atik 414EX'" in lines and "    DATE_OBS = '2024-03-01T20:11:12.5Z'" in lines
    assert "      SWCREATE: [Artemis Capture*]" in lines and lines[-1] == "ingested 0, skipped 0 already ingested, quarantined 1"
    butler = Butler(repo)
    assert butler.registry.count_datasets() == 0 and butler.registry.dimension_records("instrument") == []
    reason = (repo / "quarantine" / "atik.fits.reason").read_text()
    assert reason.count("\n") == 1
    suggestion = (repo / "quarantine" / "atik.fits.instruments.yaml").read_text()
    block = out[out.index("instruments:\n"):out.index("ingested 0")].rstrip() + "\n"
    assert block == suggestion  # what is printed is what is saved
    (repo / "instruments.yaml").write_text(block)
    code, out = run("ingest", repo, repo / "quarantine" / "atik.fits", "--transfer", "copy")
    assert code == 0 and "ingested 1" in out
    assert [r["name"] for r in Butler(repo).registry.dimension_records("instrument")] == ["atik-414ex"]


def test_field_option_places_frames_without_an_object(tmp_path):
    repo = tmp_path / "repo"
    run("create", repo)
    Butler(repo).registry.sync_dimension_records("field", [{"name": "m13", "ra": 250.42, "dec": 36.46}])
    nameless = frame_from_header("sharpcap.hdr", tmp_path / "sc.fits")  # no OBJECT card
    named = frame_from_header("nina.hdr", tmp_path / "nina.fits")  # OBJECT 'MarsM45'
    code, out = run("ingest", repo, nameless, named, "--field", "m1")
    assert code == 1 and out.count("\n") == 1 and "--field 'm1' is not a defined field (defined, with ra/dec: m13)" in out
    assert Butler(repo).registry.count_datasets() == 0
    code, out = run("ingest", repo, nameless, named, "--field", "m13")
    assert code == 0 and "ingested 2" in out
    fields = {r.data_id["instrument"]: r.data_id["field"] for r in Butler(repo).query_datasets("raw", "raw/all")}
    assert fields == {"zwo-asi290mm-mini": "m13", "zwo-asi294mc-pro": "marsm45"}  # a named field is kept


@pytest.mark.skipif(not REAL_DATA.exists(), reason=f"real data folder {REAL_DATA} is absent")
def test_real_header_frames_ingest_and_run_through_submit(tmp_path):
    """The real M13 frame and two SharpCap frames (no OBJECT) given field m13 at ingest, an LCO e91 .fits.fz
    and a N.I.N.A. frame: planned and run by openastro-submit, the QA summary groups the three m13 frames."""
    repo = tmp_path / "repo"
    run("create", repo)
    Butler(repo).registry.sync_dimension_records("field", [{"name": "m13", "ra": 250.42, "dec": 36.46}])
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(REAL_DATA / "M13_blue_0001.fits", src / "M13_blue_0001.fits")
    sc = [frame_from_header("sharpcap.hdr", src / f"sc{i}.fits", seed=i,
                            update={"DATE-OBS": f"2019-04-29T20:2{i}:29.8219583"}) for i in range(2)]
    code, out = run("ingest", repo, src / "M13_blue_0001.fits", *sc, "--field", "m13")
    assert code == 0 and "ingested 3" in out, out
    lco = frame_from_header("lco_cpt1m013-kb76-20160606-0396-e91.hdr", src / "cpt1m013-kb76-20160606-0396-e91.fits.fz")
    nina = frame_from_header("nina.hdr", src / "nina.fits")
    code, out = run("ingest", repo, lco, nina)
    assert code == 0 and "ingested 2" in out, out
    proc = subprocess.run(SUBMIT + ["-b", str(repo), "-p", f"{QA}#summary", "-i", "raw/all", "-o", "u/t/real"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    butler = Butler(repo)
    qa = butler.get("fieldQa", {"field": "m13", "band": "clear"}, collections="u/t/real")
    assert sorted(qa["exposure"]) == [20130505040939, 20190429202029, 20190429202129]
    stats = butler.get("frameStats", {"instrument": "kb76", "exposure": 201606060396}, collections="u/t/real")
    assert stats["shape"] == [48, 64]
    m13 = butler.get("frameStats", {"instrument": "orion-ssdsi", "exposure": 20130505040939}, collections="u/t/real")
    assert m13["shape"] == [1040, 1392]
    summary = json.loads(next((repo / "submit").rglob("summary.json")).read_text())
    assert summary["ok"] and summary["per_task"]["frameStats"]["succeeded"] == 5
