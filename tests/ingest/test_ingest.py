
import numpy as np
import pytest
from astropy.io import fits
from testdata import REAL_DATA, lco_header, write_frame

from openastro_parsl.ingest.ingest import ingest_raws
from openastro_parsl.ingest.translator import load_translators, translate_header


def _frames(tmp_path, n=3):
    src = tmp_path / "incoming"
    src.mkdir()
    return [write_frame(src / f"f{i}.fits", lco_header(1000 + i, "rp" if i % 2 else "gp"), seed=i) for i in range(n)]


def test_ingest_registers_and_reingest_is_noop(butler, tmp_path):
    files = _frames(tmp_path)
    rep = ingest_raws(butler, files, run="raw/all", transfer="copy")
    assert len(rep.ingested) == 3 and not rep.quarantined
    refs = butler.query_datasets("raw", "raw/all")
    assert sorted(r.data_id["exposure"] for r in refs) == [1000, 1001, 1002]
    assert {r.data_id["band"] for r in refs} == {"g", "r"}
    rec = butler.registry.dimension_records("exposure", "exposure = 1001")[0]
    assert rec["physical_filter"] == "rp" and rec["exptime"] == 60.0 and rec["day_obs"] == 20260320  # 03:00 UT on the 21st is the night of the 20th at -4.7 h
    img = butler.get(refs[0])
    assert img.data.shape == (32, 32)
    before = butler.registry.count_datasets()
    rep2 = ingest_raws(butler, files, run="raw/all", transfer="copy")
    assert not rep2.ingested and len(rep2.duplicates) == 3 and butler.registry.count_datasets() == before
    assert butler.verify() == (3, [])


def test_corrupt_files_are_quarantined_and_the_rest_ingested(butler, tmp_path):
    files = _frames(tmp_path, 2)
    truncated = tmp_path / "incoming" / "truncated.fits"
    data = files[0].read_bytes()
    truncated.write_bytes(data[: len(data) - 2880])
    garbage = tmp_path / "incoming" / "garbage.fits"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    nodate = write_frame(tmp_path / "incoming" / "nodate.fits", {"INSTRUME": "lco1m", "EXPID": 5})
    rep = ingest_raws(butler, files + [truncated, garbage, nodate], run="raw/all", transfer="copy")
    assert len(rep.ingested) == 2
    reasons = {p.name: r for p, r in rep.quarantined}
    assert set(reasons) == {"truncated.fits", "garbage.fits", "nodate.fits"}
    assert "truncated" in reasons["truncated.fits"].lower() or "fits" in reasons["truncated.fits"].lower()
    assert "not a readable FITS image" in reasons["garbage.fits"]
    assert "no observation date" in reasons["nodate.fits"]
    qdir = butler.root / "quarantine"
    for name in reasons:
        assert (qdir / name).exists()
        line = (qdir / f"{name}.reason").read_text()
        assert line.count("\n") == 1 and name in line
    assert truncated.exists()  # copied: only --transfer move hands the user's file over


def test_same_data_id_different_file_is_quarantined(butler, tmp_path):
    (f,) = _frames(tmp_path, 1)
    ingest_raws(butler, [f], transfer="copy")
    other = write_frame(tmp_path / "other.fits", lco_header(1000), seed=99)
    rep = ingest_raws(butler, [other], transfer="copy")
    assert not rep.ingested and "already ingested from a different file" in rep.quarantined[0][1]


@pytest.mark.parametrize("mode", ["copy", "symlink", "direct"])
def test_transfer_modes(butler, tmp_path, mode):
    files = _frames(tmp_path, 1)
    (ref,) = ingest_raws(butler, files, transfer=mode).ingested
    path = butler.path(ref)
    if mode == "direct":
        assert path == files[0].resolve()
    else:
        assert path.is_relative_to(butler.root) and path.exists()
        assert path.is_symlink() == (mode == "symlink")


def test_repository_translator_overrides(butler, tmp_path):
    (butler.root / "instruments.yaml").write_text("""
instruments:
  mycam:
    match: {INSTRUME: [MyCam]}
    keys:
      exposure: {key: FRAMENO}
    filters: {Red: r}
""")
    f = write_frame(tmp_path / "m.fits", {"INSTRUME": "MyCam", "FRAMENO": 7, "FILTER": "Red", "OBJECT": "NGC 1234",
                                          "DATE-OBS": "2026-01-02T03:04:05", "EXPTIME": 10.0})
    (ref,) = ingest_raws(butler, [f]).ingested
    assert ref.data_id == {"instrument": "mycam", "exposure": 7, "band": "r", "field": "ngc-1234"}


@pytest.mark.skipif(not REAL_DATA.exists(), reason=f"real data folder {REAL_DATA} is absent")
def test_real_frames_ingest(butler, tmp_path):
    """The amateur M13 frame (MaxIm DL, uint16+BZERO, no WCS) and the DSS plate ingest through the generic translator."""
    files = [REAL_DATA / "M13_blue_0001.fits", REAL_DATA / "M6707HH.fits"]
    rep = ingest_raws(butler, files, transfer="copy")
    assert not rep.quarantined, rep.quarantined
    by_inst = {r.data_id["instrument"]: r for r in rep.ingested}
    m13 = by_inst["orion-ssdsi"]
    assert m13.data_id["exposure"] == 20130505040939 and m13.data_id["band"] == "clear"
    img = butler.get(m13)
    assert img.data.shape == (1040, 1392) and img.wcs is None
    assert float(np.median(img.data)) > 400  # BZERO applied: physical ADU, not signed int16
    dss = butler.get(by_inst["palomar-48-inch-schmidt"])
    assert dss.data.shape == (1059, 1059)
    assert by_inst["palomar-48-inch-schmidt"].data_id["exposure"] == 19511129120700
    rec = butler.registry.dimension_records("instrument", "instrument = 'orion-ssdsi'")[0]
    assert rec["pixel_scale"] is None  # no focal length in the header: unknown, not invented


def test_packaged_translators_cover_demo_instruments():
    names = [t.name for t in load_translators()]
    assert names[-1] == "generic" and {"lco1m", "slt40", "ota80"} <= set(names)
    h = fits.Header({"INSTRUME": "ota80", "FILTER": "G", "OBJECT": "demo1", "DATE-OBS": "2026-03-04T05:06:07",
                     "EXPTIME": 120.0, "EGAIN": 2.5, "OBJCTRA": "10 00 24.00", "OBJCTDEC": "+02 12 00.0",
                     "XPIXSZ": 3.76, "FOCALLEN": 408.0})
    name, tr = translate_header(h, load_translators())
    assert name == "ota80" and tr.data_id == {"instrument": "ota80", "exposure": 20260304050607, "band": "g", "field": "demo1"}
    assert tr.records["exposure"]["ra"] == pytest.approx(150.1) and tr.records["exposure"]["dec"] == pytest.approx(2.2)
    assert tr.records["instrument"]["pixel_scale"] == pytest.approx(1.9, abs=0.01)
    assert tr.records["instrument"]["gain"] == 2.5
