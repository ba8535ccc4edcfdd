"""Counts, the FITS header contract per instrument, WCS share, refcat, truth, corrupt files."""

import datetime as dt
import json
import re
from collections import Counter

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

BANDS = {"gp": "g", "rp": "r", "SDSS-g'": "g", "SDSS-r'": "r", "G": "g", "R": "r"}
WCS_KEYS = ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")
COMMON = ("TELESCOP", "INSTRUME", "FILTER", "OBJECT", "DATE-OBS", "EXPTIME")
CONTRACT = {
    "lco1m": {
        "telescop": "LCO-1m",
        "filters": {"gp", "rp"},
        "present": COMMON + ("EXPID", "MJD-OBS", "GAIN", "RDNOISE", "AIRMASS", "RA", "DEC", "PIXSCALE"),
        "absent": ("EGAIN", "OBJCTRA", "OBJCTDEC"),
        "bitpix": -32,
    },
    "slt40": {
        "telescop": "SLT-0.4m",
        "filters": {"SDSS-g'", "SDSS-r'"},
        "present": COMMON + ("EXPID", "MJD-OBS", "GAIN", "RDNOISE", "AIRMASS", "RA", "DEC", "PIXSCALE"),
        "absent": ("EGAIN", "OBJCTRA", "OBJCTDEC"),
        "bitpix": -32,
    },
    "ota80": {
        "telescop": "Amateur 80mm OTA",
        "filters": {"G", "R"},
        "present": COMMON + ("EGAIN", "OBJCTRA", "OBJCTDEC", "XPIXSZ", "FOCALLEN"),
        "absent": ("EXPID", "GAIN", "RA", "DEC", "MJD-OBS", "PIXSCALE"),
        "bitpix": 16,
    },
}


def _by_instrument(truth, name):
    return [e for e in truth["exposures"] if e["instrument"] == name]


def _raw_header(survey, fname):
    with fits.open(survey.outdir / "raw" / fname, do_not_scale_image_data=True) as h:
        return h[0].header.copy()


def test_counts_small(survey, truth):
    ex = truth["exposures"]
    assert 100 <= len(ex) <= 140
    assert survey.n_exposures == len(ex) == len(survey.exposure_files)
    assert len(list((survey.outdir / "raw").glob("*.fits"))) == len(ex) + 2 == len(survey.raw_files)
    per = Counter(e["instrument"] for e in ex)
    assert per == survey.exposures_per_instrument
    assert per["lco1m"] == 16 and per["ota80"] == 12
    assert {e["band"] for e in ex if e["instrument"] == "lco1m"} == {"g", "r"}
    transits = Counter(e["transit_epoch"] for e in ex if e["purpose"] == "transit")
    assert len(transits) == 6 and all(n >= 14 for n in transits.values())
    assert all(e["band"] == "r" for e in ex if e["purpose"] == "transit")
    assert sum(1 for e in ex if e["instrument"] == "slt40" and e["purpose"] == "oot") >= 2
    assert sorted(truth["planet"]["observed_epochs"]) == sorted(transits)
    mjd = [e["mjd"] for e in ex]
    assert 61100.0 <= min(mjd) and max(mjd) <= 61161.0  # 60 nights from MJD 61100


@pytest.mark.parametrize("name", ["lco1m", "slt40", "ota80"])
def test_header_contract(survey, truth, name):
    c = CONTRACT[name]
    ex = _by_instrument(truth, name)
    ids = set()
    for e in ex:
        h = _raw_header(survey, e["file"])
        for k in c["present"]:
            assert k in h, (e["file"], k)
        for k in c["absent"]:
            assert k not in h, (e["file"], k)
        assert h["TELESCOP"] == c["telescop"] and h["INSTRUME"] == name
        assert h["BITPIX"] == c["bitpix"]
        assert h["FILTER"] in c["filters"] and BANDS[h["FILTER"]] == e["band"]
        assert h["OBJECT"] == e["field"] == "demo1"
        assert h["EXPTIME"] == e["exptime"]
        start = dt.datetime.fromisoformat(h["DATE-OBS"])
        mjd_start = (start - dt.datetime(1858, 11, 17)).total_seconds() / 86400
        assert abs(mjd_start + e["exptime"] / 2 / 86400 - e["mjd"]) < 1e-8  # truth mjd = mid-exposure
        if name == "ota80":
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", h["DATE-OBS"])
            assert h["BZERO"] == 32768 and h["BSCALE"] == 1
            assert re.fullmatch(r"\d\d \d\d \d\d\.\d\d", h["OBJCTRA"])
            assert re.fullmatch(r"[+-]\d\d \d\d \d\d\.\d", h["OBJCTDEC"])
            assert h["EGAIN"] == e["gain"]
            assert 206.265 * h["XPIXSZ"] / h["FOCALLEN"] == pytest.approx(1.9, rel=2e-3)
            assert e["exposure"] == int(start.strftime("%Y%m%d%H%M%S"))
        else:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", h["DATE-OBS"])
            assert isinstance(h["EXPID"], int) and h["EXPID"] == e["exposure"]
            assert h["MJD-OBS"] == pytest.approx(e["mjd"] - e["exptime"] / 86400 / 2, abs=1e-8)
            assert isinstance(h["RA"], float) and isinstance(h["DEC"], float)
            assert h["GAIN"] == e["gain"] and h["RDNOISE"] == e["read_noise"]
            assert h["PIXSCALE"] == truth["instruments"][name]["pixel_scale"]
        assert e["exposure"] not in ids
        ids.add(e["exposure"])
    dtype = fits.getdata(survey.outdir / "raw" / ex[0]["file"]).dtype
    assert dtype.newbyteorder("=") == np.dtype(np.uint16 if name == "ota80" else np.float32)


@pytest.mark.parametrize("name,lo,hi", [("lco1m", 1.0, 1.0), ("slt40", 0.85, 0.95), ("ota80", 0.4, 0.6)])
def test_wcs_share_and_truth_wcs(survey, truth, name, lo, hi):
    ex = _by_instrument(truth, name)
    with_wcs = 0
    for e in ex:
        h = _raw_header(survey, e["file"])
        present = [k in h for k in WCS_KEYS]
        assert all(present) or not any(present)
        assert all(present) == e["has_wcs"]
        if e["has_wcs"]:
            with_wcs += 1
            for k in WCS_KEYS:
                if k.startswith("CTYPE"):
                    assert h[k] == e["wcs"][k]
                else:
                    assert h[k] == pytest.approx(e["wcs"][k], rel=1e-12, abs=1e-15)
        else:  # pointing hints survive; frame is solvable
            assert ("RA" in h and "DEC" in h) or ("OBJCTRA" in h and "OBJCTDEC" in h)
            assert e["n_refcat_stars"] >= 8
        assert e["wcs"]["CTYPE1"] == "RA---TAN"
    assert lo <= with_wcs / len(ex) <= hi


def test_every_frame_sees_the_targets(truth):
    for e in truth["exposures"]:
        names = {"OA-T1", "OA-X1", "OA-V1", "OA-V2"}
        assert set(e["targets"]) == names
        assert all(e["targets"][n]["in_frame"] for n in names), e["file"]
        assert not e["targets"]["OA-T1"]["saturated"]


def test_refcat(survey, truth):
    t = Table.read(survey.refcat, format="ascii.ecsv")
    assert t.colnames == ["id", "ra", "dec", "g", "r", "g_err", "r_err", "variable"]
    # the variable targets are flagged as Gaia would flag them; the planet host and the other stars are not
    variables = {tg["name"] for tg in truth["targets"] if tg["kind"] == "variable"}
    flagged = {s["target"] for s in truth["stars"] if s["id"] in set(t["id"][t["variable"]])}
    assert flagged == variables
    assert t["id"].dtype.kind == "i" and len(set(t["id"])) == len(t)
    assert 300 <= len(t) <= 500
    stars = {s["id"]: s for s in truth["stars"]}
    assert set(t["id"]) == set(stars)
    tr = np.array([stars[i]["r"] for i in t["id"]])
    tgr = np.array([stars[i]["g"] - stars[i]["r"] for i in t["id"]])
    assert tr.min() >= 11.0 and tr.max() <= 19.5 and tgr.min() >= 0.2 - 1e-9 and tgr.max() <= 1.4 + 1e-9
    assert np.sum(tr > 18.0) > 3 * np.sum(tr < 14.0)  # counts rise to faint mags
    dec = np.array([stars[i]["dec"] for i in t["id"]])
    ra = np.array([stars[i]["ra"] for i in t["id"]])
    dpos = np.hypot((t["ra"] - ra) * np.cos(np.deg2rad(dec)), t["dec"] - dec) * 3.6e6  # mas
    assert 15.0 < np.sqrt(np.mean(dpos**2) / 2) < 25.0
    pull = (t["r"] - tr) / t["r_err"]
    assert 0.8 < np.std(pull) < 1.2 and np.all((t["r_err"] >= 0.01) & (t["r_err"] <= 0.03))
    # variables and the host are in, the transient is not
    tgt = {x["name"]: x for x in truth["targets"]}
    for name in ("OA-T1", "OA-V1", "OA-V2"):
        assert tgt[name]["refcat_id"] in stars
    x = tgt["OA-X1"]
    sep = np.hypot((t["ra"] - x["ra"]) * np.cos(np.deg2rad(x["dec"])), t["dec"] - x["dec"]) * 3600
    assert sep.min() > 5.0


def test_truth_json_is_plain(survey, truth):
    def bad(c):
        raise ValueError(c)

    json.loads(survey.truth.read_text(), parse_constant=bad)  # no NaN / Infinity
    assert truth["seed"] == 42 and truth["size"] == "small"
    assert truth["fields"][0] == {"name": "demo1", "ra": 150.10, "dec": 2.20, "refcat_half_width_arcmin": 7.0}
    for name, inst in truth["instruments"].items():
        for k in ("pixel_scale", "rotation_deg", "shape", "gain", "read_noise", "bands", "colour_terms", "zero_points"):
            assert k in inst, (name, k)
    keys = ("file", "instrument", "exposure", "band", "field", "mjd", "exptime", "has_wcs", "wcs", "zero_point",
            "colour_term", "airmass", "seeing_fwhm_arcsec", "sky_e_per_px", "gain", "read_noise")
    for e in truth["exposures"]:
        assert all(k in e for k in keys)
    assert {t["kind"] for t in truth["targets"]} == {"transit_host", "variable", "transient"}
    p = truth["planet"]
    for k in ("t0", "dt", "planets"):
        assert k in p["ttvfast"]
    assert len(p["ttvfast"]["planets"]) == 2


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_corrupt_files_fail_to_open(survey, truth):
    problems = {c["problem"]: c for c in truth["corrupt_files"]}
    assert set(problems) == {"truncated", "garbage_header"}
    assert {c["file"] for c in truth["corrupt_files"]}.isdisjoint(e["file"] for e in truth["exposures"])
    for c in truth["corrupt_files"]:
        path = survey.outdir / "raw" / c["file"]
        assert path.exists() and path.suffix == ".fits"
        with pytest.raises((OSError, TypeError, ValueError)):
            with fits.open(path) as h:
                float(np.sum(h[0].data))
    # the truncated one still has a readable header that claims to be an slt40 frame
    h = fits.getheader(survey.outdir / "raw" / problems["truncated"]["file"])
    assert h["INSTRUME"] == "slt40"
