"""Header translators on real headers (tests/data/real/headers, sources in tests/data/real/README.md): LCO BANZAI
e91 frames, MaxIm DL, N.I.N.A., SharpCap, SGP, APT, ZWO (Seestar, ASIAIR), Ekos/INDI, and the real M13 (MaxIm
DL) and DSS frames; plus the header-value rules (dates, frame types, patterns, pixel scale) they rely on."""

import numpy as np
import pytest
from astropy.io import fits
from data.real.frames import frame_from_header, real_header
from testdata import REAL_DATA, write_frame

from openastro_parsl.astro.observation import observation_info
from openastro_parsl.errors import IngestError
from openastro_parsl.ingest.cards import glob_matches, obs_type, parse_date
from openastro_parsl.ingest.ingest import ingest_raws
from openastro_parsl.ingest.suggest import suggest_translator, suggestion_yaml
from openastro_parsl.ingest.translator import (
    NO_BAND,
    Translator,
    TranslatorConfig,
    UnmatchedHeader,
    load_translators,
    translate_header,
)

TR = load_translators()

# file, translator, data ID, obs_type, reduced, pixel scale (arcsec/px; None: unknown), day_obs, (ra, dec) deg
REAL = [
    ("lco_cpt1m013-kb76-20160606-0396-e91.hdr", "lco",
     {"instrument": "kb76", "exposure": 201606060396, "band": "w", "field": "xl8b85f"}, "science", True, 0.467,
     20160606, (272.94590, 1.28173)),
    ("lco_cpt1m010-ef02-20220926-0242-e92.hdr", "lco",
     {"instrument": "ef02", "exposure": 202209260242, "band": "g", "field": "65803"}, "science", True, 0.682,
     20220926, (50.92633, -33.42022)),
    ("maximdl_itelescope_t33.hdr", "maximdl",
     {"instrument": "apogee-usb-net-1425mm", "exposure": 20180704140303, "band": "sii", "field": "m17"},
     "science", True, 206.264806 * 7.4 / 1425.0, 20180704, (275.20050, -16.18300)),
    ("nina.hdr", "nina",
     {"instrument": "zwo-asi294mc-pro", "exposure": 20210302201900, "band": "clear", "field": "marsm45"},
     "science", False, None, 20210302, (0.0, 0.0)),
    ("sharpcap.hdr", "sharpcap",
     {"instrument": "zwo-asi290mm-mini", "exposure": 20190429202529, "band": "clear", "field": "unassigned"},
     "science", False, None, 20190429, None),
    ("sgp_seqgenpro.hdr", "sgp",
     {"instrument": "zwo-asi294mc-pro-1480mm", "exposure": 20200530002249, "band": "haoiii", "field": "m57"},
     "science", False, 0.65415, 20200529, (283.39554, 33.03406)),
    ("apt.hdr", "apt",
     {"instrument": "zwo-asi294mc-pro-400mm", "exposure": 20180917210446, "band": "clear", "field": "test"},
     "science", False, 206.264806 * 4.63 / 400.0, 20180917, (23.75, 30.74028)),
    ("seestar_s50.hdr", "zwo",
     {"instrument": "seestar-s50-250mm", "exposure": 20250513224835, "band": "ircut", "field": "ngc-6027a"},
     "science", False, 206.264806 * 2.9 / 250.0, 20250513, (240.1125, 20.661389)),
    ("asiair_documented.hdr", "zwo",
     {"instrument": "zwo-asi2600mm-pro-540mm", "exposure": 20250901210304, "band": NO_BAND, "field": "m-31"},
     "dark", False, 206.264806 * 3.76 / 540.0, 20250901, None),
    ("ekos_indi_documented.hdr", "ekos",
     {"instrument": "zwo-ccd-asi1600mm-pro-530mm-bin2", "exposure": 20240601221530, "band": "red", "field": "m-13"},
     "science", False, 206.264806 * 7.6 / 530.0, 20240601, (250.42346, 36.46131)),
]


@pytest.mark.parametrize("name, translator, data_id, kind, reduced, scale, day_obs, pointing", REAL,
                         ids=[r[0] for r in REAL])
def test_real_headers_translate(name, translator, data_id, kind, reduced, scale, day_obs, pointing):
    got, tr = translate_header(real_header(name), TR)
    assert got == translator and tr.data_id == data_id
    assert tr.obs_type == kind and tr.reduced is reduced
    rec = tr.records["exposure"]
    assert rec["day_obs"] == day_obs
    if scale is None:
        assert tr.records["instrument"]["pixel_scale"] is None
    else:
        assert tr.records["instrument"]["pixel_scale"] == pytest.approx(scale, rel=1e-6)
    if pointing is None:
        assert rec["ra"] is None
    else:
        assert (rec["ra"], rec["dec"]) == pytest.approx(pointing, abs=1e-4)


def test_lco_e91_header_details():
    """BANZAI writes the frame in electrons: GAIN = 1 and SATURATE scaled by the gain; the exposure's start is
    MJD-OBS, its night DAY-OBS, its telescope SITEID/TELESCOP; calibration reads all of it."""
    h = real_header("lco_cpt1m013-kb76-20160606-0396-e91.hdr")
    _, tr = translate_header(h, TR)
    assert tr.records["instrument"] == {"name": "kb76", "telescope": "cpt/1m0-13", "pixel_scale": 0.467,
                                        "gain": 1.0, "read_noise": 13.5}
    assert tr.records["exposure"]["mjd"] == pytest.approx(57545.9501693)
    assert tr.records["exposure"]["exptime"] == 100.0 and tr.records["exposure"]["airmass"] == pytest.approx(1.2399049)
    info = observation_info(h, translators=TR)
    assert info.reduced and info.obs_type == "science" and info.gain == 1.0
    assert info.saturation_adu == pytest.approx(64400.0) and info.read_noise == 13.5
    assert (info.site_lat, info.site_lon, info.site_elev) == pytest.approx((-32.3473417, 20.8100389, 1760.0))
    assert info.mjd_mid == pytest.approx(57545.9501693 + 50.0 / 86400)
    raw = h.copy()
    raw["RLEVEL"] = 0  # the same frame as the telescope wrote it (e00): ISR still to do
    assert translate_header(raw, TR)[1].reduced is False
    bias = h.copy()
    bias["OBSTYPE"] = "BIAS"
    del bias["FILTER"]
    _, tb = translate_header(bias, TR)
    assert tb.obs_type == "bias" and tb.data_id["band"] == NO_BAND
    dark = h.copy()
    dark["OBSTYPE"] = "DARK"  # FILTER 'w' still in the wheel: a dark has no passband all the same
    _, td = translate_header(dark, TR)
    assert td.obs_type == "dark" and td.data_id["band"] == NO_BAND and td.records["exposure"]["physical_filter"] == "w"
    sky = h.copy()
    sky["OBSTYPE"] = "SKYFLAT"
    sky["FILTER"] = "rp"
    assert translate_header(sky, TR)[1].obs_type == "flat" and translate_header(sky, TR)[1].data_id["band"] == "r"


def test_lco_fz_frame_ingests_from_its_sci_extension(butler, tmp_path):
    """A .fits.fz (fpack: empty primary HDU, the image and header in the compressed SCI extension) ingests,
    keeps its extension, and reads back as the image."""
    f = frame_from_header("lco_cpt1m013-kb76-20160606-0396-e91.hdr", tmp_path / "cpt1m013-kb76-20160606-0396-e91.fits.fz")
    rep = ingest_raws(butler, [f])
    assert not rep.quarantined, rep.quarantined
    (ref,) = rep.ingested
    assert ref.data_id == {"instrument": "kb76", "exposure": 201606060396, "band": "w", "field": "xl8b85f"}
    assert butler.path(ref).name.endswith(".fits.fz")
    img = butler.get(ref)
    assert img.data.shape == (48, 64) and float(np.median(img.data)) == pytest.approx(500.0, abs=5.0)
    assert butler.registry.dimension_records("instrument")[0]["telescope"] == "cpt/1m0-13"


@pytest.mark.skipif(not REAL_DATA.exists(), reason=f"real data folder {REAL_DATA} is absent")
def test_real_m13_and_dss_frames():
    """M13_blue_0001.fits is a MaxIm DL Essentials frame (light, unfiltered, no object, no pointing, no focal
    length); the DSS plate has no capture program and goes to the catch-all."""
    m13 = fits.getheader(REAL_DATA / "M13_blue_0001.fits")
    name, tr = translate_header(m13, TR)
    assert name == "maximdl" and tr.data_id == {"instrument": "orion-ssdsi", "exposure": 20130505040939,
                                                "band": "clear", "field": "unassigned"}
    assert tr.obs_type == "science" and not tr.reduced and tr.records["instrument"]["pixel_scale"] is None
    dss = fits.getheader(REAL_DATA / "M6707HH.fits")
    name, tr = translate_header(dss, TR)
    assert name == "generic" and tr.data_id["field"] == "m67" and tr.obs_type == "science"


@pytest.mark.parametrize("value, kind", [
    ("Light Frame", "science"), ("LIGHT", "science"), ("Light", "science"), ("EXPOSE", "science"),
    ("object", "science"), ("Bias Frame", "bias"), ("BIAS", "bias"), ("ZERO", "bias"), ("Dark Frame", "dark"),
    ("DARK", "dark"), ("Flat Field", "flat"), ("FLAT", "flat"), ("SKYFLAT", "flat"), ("Flat Frame", "flat"),
    ("Tricolor Image", "other"), ("GUIDE", "other"), ("  light  frame ", "science"),
])
def test_frame_type_spellings(value, kind):
    assert obs_type(value) == kind


def test_dates_with_zones_fractions_and_local_time():
    h = fits.Header({"A": "2024-03-01T20:11:12.5Z", "B": "2024-03-01T22:11:12.5+02:00",
                     "C": "2019-04-29T20:25:29.8219583", "D": "2024-03-01 20:11:12", "E": "2024-03-01T15:11:12-0500",
                     "F": "yesterday"})
    t = parse_date(h, "A")
    for card in "BDE":
        assert abs((parse_date(h, card) - t).sec) < 0.51, card  # D, E have no fraction
    assert parse_date(h, "C").isot == "2019-04-29T20:25:29.822"
    with pytest.raises(IngestError, match="F='yesterday' is not a date"):
        parse_date(h, "F")
    nina = real_header("nina.hdr")
    local_only = nina.copy()
    del local_only["DATE-OBS"]
    with pytest.raises(IngestError, match="DATE-LOC='2021-03-02T21:19:00.455' is local time without a zone"):
        translate_header(local_only, TR)
    local_only["DATE-LOC"] = "2021-03-02T21:19:00.455+01:00"
    _, tr = translate_header(local_only, TR)
    assert tr.data_id["exposure"] == 20210302201900


def test_match_patterns():
    assert glob_matches("N.I.N.A.*", "N.I.N.A. 1.10.2.90") and not glob_matches("N.I.N.A.*", "NxIxNxAx 1")
    assert glob_matches("sharpcap*", "SharpCap v4.1") and glob_matches("SDSS-r'", "sdss-R'")
    assert glob_matches("[1:2048]", "[1:2048]") and glob_matches("fa??", "fa03") and not glob_matches("fa??", "fa3")


def test_unbinned_pixel_size_is_multiplied_by_the_binning():
    cfg = TranslatorConfig.model_validate({
        "match": {"INSTRUME": ["cam"]}, "pixel_size_binned": False, "default_band": "clear",
        "keys": {"exposure": {"from_date": "DATE-OBS"}, "pixel_size_um": ["XPIXSZ"], "focal_length_mm": ["FOCALLEN"]}})
    h = fits.Header({"INSTRUME": "cam", "DATE-OBS": "2024-01-01T00:00:00", "XPIXSZ": 3.76, "XBINNING": 2,
                     "FOCALLEN": 500.0})
    tr = Translator("cam", cfg).translate(h)
    assert tr.records["instrument"]["pixel_scale"] == pytest.approx(206.264806 * 3.76 * 2 / 500.0)


def test_translator_yaml_refuses_an_unknown_frame_type():
    with pytest.raises(ValueError, match="obs_types values must be one of"):
        TranslatorConfig.model_validate({"keys": {"exposure": {"key": "N"}}, "obs_types": {"lights": "sky"}})


def _unknown_program() -> fits.Header:
    return fits.Header({"CAMERA": "Atik 414EX", "SWCREATE": "Artemis Capture 3.1.2", "DATE_OBS": "2024-03-01T20:11:12.5Z",
                        "EXPOSURE": 30.0, "FILTER": "V", "OBJECT": "M 13", "FOCALLEN": 800.0, "XPIXSZ": 6.45,
                        "IMAGETYP": "Light Frame"})


def test_unmatched_header_and_its_suggestion(butler, tmp_path):
    """No INSTRUME/TELESCOP and no DATE-OBS: no translator reads it; the suggested entry, pasted into
    REPO/instruments.yaml, does."""
    h = _unknown_program()
    with pytest.raises(UnmatchedHeader, match="no header translator matches") as err:
        translate_header(h, TR)
    assert err.value.header["CAMERA"] == "Atik 414EX"
    entry = suggest_translator(h)
    assert list(entry) == ["atik-414ex"]
    assert entry["atik-414ex"]["match"] == {"SWCREATE": ["Artemis Capture*"], "CAMERA": ["Atik 414EX"]}
    f = write_frame(tmp_path / "atik.fits", dict(h))
    rep = ingest_raws(butler, [f])
    assert not rep.ingested and [p.name for p, _ in rep.unmatched] == ["atik.fits"]
    assert butler.registry.count_datasets() == 0 and butler.registry.dimension_records("instrument") == []
    (butler.root / "instruments.yaml").write_text(suggestion_yaml(h))
    again = write_frame(tmp_path / "atik2.fits", dict(h))
    (ref,) = ingest_raws(butler, [again]).ingested
    assert ref.data_id == {"instrument": "atik-414ex-800mm", "exposure": 20240301201112, "band": "v", "field": "m-13"}


def test_no_suggestion_without_a_date():
    h = fits.Header({"CAMERA": "Atik 414EX", "EXPOSURE": 30.0})
    with pytest.raises(IngestError, match="no observation date card"):
        suggest_translator(h)
