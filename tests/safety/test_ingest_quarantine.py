"""Ingest refuses frames it would have to guess (issue 12, item 6): a missing or unknown INSTRUME or FILTER
is quarantined with that reason instead of becoming instrument `lco-1m` or band `clear`; a default applies
only where a translator declares it."""

import pytest
from testdata import lco_header, write_frame

from openastro_parsl.ingest.ingest import ingest_raws

pytestmark = pytest.mark.both_backends


def _without(header: dict, *cards: str) -> dict:
    return {k: v for k, v in header.items() if k not in cards}


def test_missing_or_unknown_instrument_or_filter_is_quarantined(butler, tmp_path):
    src = tmp_path / "incoming"
    src.mkdir()
    frames = {
        "good.fits": lco_header(1),
        "no_instrume.fits": _without(lco_header(2), "INSTRUME"),
        "other_instrume.fits": lco_header(3) | {"INSTRUME": "lco2m"},
        "no_filter.fits": _without(lco_header(4), "FILTER"),
        "blank_filter.fits": lco_header(5, filt=""),
        "unknown_filter.fits": lco_header(6, filt="zs"),
    }
    files = [write_frame(src / name, h, seed=i) for i, (name, h) in enumerate(frames.items())]
    rep = ingest_raws(butler, files, transfer="copy")
    assert [r.data_id for r in rep.ingested] == [{"instrument": "lco1m", "exposure": 1, "band": "r", "field": "demo1"}]
    reasons = {p.name: r for p, r in rep.quarantined}
    assert set(reasons) == set(frames) - {"good.fits"}
    assert "no INSTRUME card" in reasons["no_instrume.fits"] and "lco1m" in reasons["no_instrume.fits"]
    assert "INSTRUME='lco2m' is not a known instrument of TELESCOP='LCO-1m'" in reasons["other_instrume.fits"]
    for name in ("no_filter.fits", "blank_filter.fits"):
        assert "no filter card" in reasons[name] and "FILTER" in reasons[name]
    assert "FILTER='zs' is not a filter of instrument lco1m" in reasons["unknown_filter.fits"]
    for name, reason in reasons.items():
        line = (butler.root / "quarantine" / f"{name}.reason").read_text()
        assert line.count("\n") == 1 and reason in line
    assert [r["name"] for r in butler.registry.dimension_records("instrument")] == ["lco1m"]
    assert [r["name"] for r in butler.registry.dimension_records("band")] == ["r"]


def test_a_default_band_applies_only_where_declared(butler, tmp_path):
    """An unfiltered camera is refused until its translator says what band its frames are; the catch-all
    translator declares `clear` for the real unfiltered frames (M13, DSS) it ingests."""
    header = {"INSTRUME": "MyCam", "FRAMENO": 7, "OBJECT": "NGC 1234", "DATE-OBS": "2026-01-02T03:04:05"}
    translator = "instruments:\n  mycam:\n    match: {INSTRUME: [MyCam]}\n    keys:\n      exposure: {key: FRAMENO}\n"
    (butler.root / "instruments.yaml").write_text(translator)
    rep = ingest_raws(butler, [write_frame(tmp_path / "a.fits", header)])
    assert not rep.ingested and "instrument mycam declares no default_band" in rep.quarantined[0][1]
    (butler.root / "instruments.yaml").write_text(translator + "    default_band: clear\n")
    (ref,) = ingest_raws(butler, [write_frame(tmp_path / "b.fits", header)]).ingested
    assert ref.data_id["band"] == "clear"
    amateur = {"INSTRUME": "Orion SSDSI", "DATE-OBS": "2013-05-05T04:09:39", "EXPTIME": 5.0}
    (ref,) = ingest_raws(butler, [write_frame(tmp_path / "c.fits", amateur)]).ingested
    assert ref.data_id["instrument"] == "orion-ssdsi" and ref.data_id["band"] == "clear"


def test_direct_ingest_never_moves_the_users_files(butler, tmp_path):
    """With --transfer direct the file stays where it is and may already back a dataset: a refusal copies it
    to the quarantine instead of moving it away."""
    src = tmp_path / "archive"
    src.mkdir()
    good = write_frame(src / "a.fits", lco_header(1), seed=1)
    ingest_raws(butler, [good], transfer="direct")
    again = write_frame(src / "b.fits", lco_header(1), seed=2)  # same data ID, other pixels
    bad = write_frame(src / "c.fits", _without(lco_header(3), "INSTRUME"), seed=3)
    rep = ingest_raws(butler, [again, bad], transfer="direct")
    assert {p.name for p, _ in rep.quarantined} == {"b.fits", "c.fits"}
    assert good.exists() and again.exists() and bad.exists()
    assert (butler.root / "quarantine" / "c.fits.reason").exists()
    assert butler.verify()[1] == []


def test_only_move_hands_a_refused_file_over(butler, tmp_path):
    """The default `--transfer copy` leaves the user's files alone, refused ones included (a real ESO frame was
    moved out of a checkout this way); `move` moves a refused file into the quarantine."""
    src = tmp_path / "night"
    src.mkdir()
    kept = write_frame(src / "k.fits", _without(lco_header(1), "INSTRUME"), seed=1)
    moved = write_frame(src / "m.fits", _without(lco_header(2), "INSTRUME"), seed=2)
    assert len(ingest_raws(butler, [kept], transfer="copy").quarantined) == 1
    assert kept.exists() and (butler.root / "quarantine" / "k.fits").exists()
    assert len(ingest_raws(butler, [moved], transfer="move").quarantined) == 1
    assert not moved.exists() and (butler.root / "quarantine" / "m.fits").exists()


def test_a_directory_of_compressed_frames_is_ingested(butler, tmp_path):
    """`.fits.gz` and `.fits.fz` in a directory are frames too (the suffix alone, `.gz`, said they were not)."""
    import gzip
    import shutil

    src = tmp_path / "night"
    src.mkdir()
    plain = write_frame(tmp_path / "a.fits", lco_header(1), seed=1)
    with open(plain, "rb") as fin, gzip.open(src / "a.fits.gz", "wb") as fout:
        shutil.copyfileobj(fin, fout)
    (src / "notes.txt").write_text("not a frame")
    rep = ingest_raws(butler, [src])
    assert [r.data_id["exposure"] for r in rep.ingested] == [1] and not rep.quarantined
    assert butler.verify()[1] == []


def test_header_fixes_go_into_the_repository_copy_only(butler, tmp_path):
    """`ingest --set FILTER=rp` gives an unfiltered frame its filter in the stored copy (with HISTORY), leaves
    the user's file byte for byte, and the same file with the same fixes is recognised as already ingested."""
    from astropy.io import fits

    from openastro_parsl.ingest.overrides import HeaderFixError, parse_header_fixes

    src = write_frame(tmp_path / "a.fits", _without(lco_header(1), "FILTER"), seed=1)
    before = src.read_bytes()
    assert ingest_raws(butler, [src]).quarantined  # no filter: refused
    fixes = parse_header_fixes(["filter=rp", "EXPTIME=80"])
    assert fixes == {"FILTER": "rp", "EXPTIME": 80}
    (ref,) = ingest_raws(butler, [src], header_fixes=fixes).ingested
    assert ref.data_id["band"] == "r" and src.read_bytes() == before
    stored = fits.getheader(butler.path(ref))
    assert stored["FILTER"] == "rp" and stored["EXPTIME"] == 80
    assert any("--set FILTER=rp" in str(h) for h in stored["HISTORY"])
    again = ingest_raws(butler, [src], header_fixes=fixes)
    assert not again.ingested and len(again.duplicates) == 1
    assert not list((butler.root / "quarantine" / ".header-fixes").iterdir())
    assert butler.verify()[1] == []
    for bad in (["FILTER"], ["NAXIS1=3"], ["TOO_LONG_KEY=1"]):
        try:
            parse_header_fixes(bad)
        except HeaderFixError as exc:
            assert bad[0] in str(exc)
        else:
            raise AssertionError(bad)
    import pytest

    with pytest.raises(Exception, match="--transfer direct"):
        ingest_raws(butler, [src], transfer="direct", header_fixes=fixes)


def test_a_header_object_name_takes_the_defined_fields_case(butler, tmp_path):
    """OBJECT 'Demo1' is slugged to 'demo1'; a field defined as 'DEMO1' is that field, not a new one."""
    butler.registry.sync_dimension_records("field", [{"name": "DEMO1", "ra": 10.0, "dec": 20.0}])
    (ref,) = ingest_raws(butler, [write_frame(tmp_path / "a.fits", lco_header(1) | {"OBJECT": "Demo1"})]).ingested
    assert ref.data_id["field"] == "DEMO1"
    assert [f["name"] for f in butler.registry.dimension_records("field")] == ["DEMO1"]
