"""Light-curve and transit-time files from the ground and the archives: time systems, column mappings, AAVSO
downloads, ETD-style and published transit-time tables."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import EarthLocation, SkyCoord
from astropy.table import Table
from astropy.time import Time
from testdata import REAL_DATA

from openastro_parsl.ingest.lcformats import (
    detect_format,
    parse_band_map,
    parse_columns,
    read_aavso,
    read_table_lightcurve,
)
from openastro_parsl.ingest.lctime import Site, TimeSystemError, normalise_system, to_bjd_tdb
from openastro_parsl.ingest.lightcurves import LightCurveFileError, table_lightcurves
from openastro_parsl.ingest.transit_times import read_transit_times, transit_times_tables

RA, DEC = 287.3, 38.9
LA_PALMA = Site(28.7606, -17.8792, 2326.0, "lapalma")
K2_24 = REAL_DATA / "k2-24_petigura2018_transit_times.txt"
needs_real = pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real data folder {REAL_DATA} absent")


def _truth(jd_utc, site=None):
    loc = (EarthLocation.from_geodetic(site.lon * u.deg, site.lat * u.deg, site.elev * u.m) if site
           else EarthLocation.from_geocentric(0, 0, 0, unit=u.m))
    t = Time(jd_utc, format="jd", scale="utc", location=loc)
    star = SkyCoord(RA * u.deg, DEC * u.deg)
    return t, star, (t.tdb + t.light_travel_time(star, "barycentric")).jd


def test_offset_systems_are_exact():
    assert to_bjd_tdb([1325.5], "BTJD")[0] == 2458325.5
    assert to_bjd_tdb([2072.7954], "bkjd")[0] == pytest.approx(2456905.7954, abs=1e-9)
    assert to_bjd_tdb([5000.1], "BJD", offset=2450000)[0] == pytest.approx(2455000.1, abs=1e-9)
    assert normalise_system("hjd_utc") == "HJD" and normalise_system("TJD") == "BTJD"
    # BJD on the UTC clock (2009: TAI-UTC = 34 s, so TT-UTC = 66.184 s; TDB-TT is under 2 ms)
    assert (to_bjd_tdb([2455000.0], "BJD_UTC")[0] - 2455000.0) * 86400 == pytest.approx(66.184, abs=0.002)
    with pytest.raises(TimeSystemError, match="--time-system 'GMST'"):
        normalise_system("GMST")
    with pytest.raises(TimeSystemError, match="coordinates"):
        to_bjd_tdb([2459000.5], "HJD")


@pytest.mark.parametrize("site", [None, LA_PALMA])
def test_utc_systems_reach_bjd_tdb(site):
    """JD, MJD and HJD (UTC) against astropy's barycentric time computed directly, to 1 ms."""
    jd = 2459000.5 + np.linspace(0, 400, 9)
    t, star, truth = _truth(jd, site)
    hjd = (t + t.light_travel_time(star, "heliocentric")).jd
    assert np.abs(to_bjd_tdb(jd, "JD", ra=RA, dec=DEC, site=site) - truth).max() * 86400 < 1e-3
    assert np.abs(to_bjd_tdb(jd - 2400000.5, "MJD", ra=RA, dec=DEC, site=site) - truth).max() * 86400 < 1e-3
    got = to_bjd_tdb(hjd - 2450000, "HJD", offset=2450000, ra=RA, dec=DEC, site=site)
    assert np.abs(got - truth).max() * 86400 < 1e-3
    # the corrections are real: BJD_TDB - JD_UTC is ~69 s + up to ~8 min of light time
    assert 60 < np.abs(truth - jd).max() * 86400 < 600


def test_site_parsing():
    assert Site.parse(None).name == "geocentre"
    s = Site.parse("28.76,-17.88,2326")
    assert (s.lat, s.lon, s.elev) == (28.76, -17.88, 2326.0)
    with pytest.raises(TimeSystemError, match="--site"):
        Site.parse("north")


def _ground_csv(path, seed=3):
    """Two bands in one file, HJD_UTC times, a 0.4137-day sinusoid injected on BJD_TDB."""
    rng = np.random.default_rng(seed)
    jd = np.sort(2460400.35 + rng.integers(0, 30, 240) + rng.uniform(0, 0.2, 240))
    t, star, bjd = _truth(jd, LA_PALMA)
    hjd = (t + t.light_travel_time(star, "heliocentric")).jd
    band = np.where(np.arange(len(jd)) % 2 == 0, "V", "B")
    base = np.where(band == "V", 12.0, 12.6)
    mag = base + 0.1 * np.sin(2 * np.pi * (bjd - 2460400.0) / 0.4137) + rng.normal(0, 0.005, len(jd))
    lines = ["# ground-based photometry", "HJD,Filter,Vmag,eVmag,Obs"]
    lines += [f"{h:.8f},{b},{m:.4f},0.0050,{'T1' if k % 3 else 'T2'}"
              for k, (h, b, m) in enumerate(zip(hjd, band, mag, strict=True))]
    path.write_text("\n".join(lines) + "\n")
    return bjd, band, mag


def test_csv_with_a_column_mapping_gives_one_light_curve_per_band(tmp_path):
    path = tmp_path / "ground.csv"
    bjd, band, mag = _ground_csv(path)
    cols = parse_columns("time=HJD,mag=Vmag,err=eVmag,band=Filter,instrument=Obs")
    obs = read_table_lightcurve(path, cols)
    assert obs.kind == "mag" and len(obs.time) == 240 and obs.line[0] == 3
    lcs = table_lightcurves(obs, target="GB-V1", ra=RA, dec=DEC, time_system="HJD", site=LA_PALMA,
                            band_map=parse_band_map("V=V,B=B"))
    assert sorted(lcs) == ["B", "V"]
    for b, lc in lcs.items():
        sel = band == b
        assert len(lc) == sel.sum() and lc.meta["band"] == b and lc.meta["time_system"] == "BJD_TDB"
        assert np.abs(lc["time"] - bjd[sel]).max() * 86400 < 1e-3  # HJD at La Palma -> BJD_TDB
        assert np.allclose(lc["mag"], np.round(mag[sel], 4))
        for inst in ("T1", "T2"):  # flux relative to each instrument's median, error propagated
            m = lc["instrument"] == inst
            assert np.median(lc["flux"][m]) == pytest.approx(1.0, abs=1e-3)
        assert np.allclose(lc["flux_err"], lc["flux"] * 0.005 * np.log(10) / 2.5)
        assert {"time", "mag", "mag_err", "flux", "flux_err", "instrument", "exposure", "site", "outlier"} \
            <= set(lc.colnames)
        assert lc["site"][0] == "lapalma" and not lc["outlier"].any()


def test_flux_columns_and_ecsv(tmp_path):
    t = Table({"bjd": 2459500.0 + np.arange(20) * 0.01, "f": 2000.0 + np.arange(20.0), "fe": np.full(20, 5.0)})
    t.meta["observer"] = "me"
    path = tmp_path / "lc.ecsv"
    t.write(path, format="ascii.ecsv")
    assert detect_format(path) == "ecsv"
    obs = read_table_lightcurve(path, parse_columns("time=bjd,flux=f,err=fe"), fmt="ecsv", band="r")
    assert obs.meta["observer"] == "me" and obs.line[0] > 1
    lc = table_lightcurves(obs, target="X", ra=None, dec=None, time_system="BJD_TDB")["r"]
    assert np.median(lc["flux"]) == pytest.approx(1.0)
    assert np.allclose(lc["mag"], -2.5 * np.log10(lc["flux"]))
    assert np.allclose(lc["flux_err"], 5.0 / np.median(t["f"]))


@pytest.mark.parametrize("body,columns,match", [
    ("HJD,V,eV\n2459000.1,12.0,0.01\n2459000.2,abc,0.01\n", "time=HJD,mag=V,err=eV", r"bad.csv:3: column 'V'"),
    ("HJD,V,eV\n2459000.1,12.0,0.01\n2459000.2,12.1\n", "time=HJD,mag=V,err=eV", r"bad.csv:3: 2 fields"),
    ("HJD,V,eV\n2459000.1,12.0,-0.01\n", "time=HJD,mag=V,err=eV", r"bad.csv:2: .*positive"),
    ("HJD,V,eV\n2459000.1,12.0,0.01\n", "time=JD,mag=V,err=eV", r"bad.csv:1: no column 'JD'.*--columns"),
    ("a,b,c\n1,2,3\n", "", r"--columns"),
])
def test_bad_rows_name_file_and_line(tmp_path, body, columns, match):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(LightCurveFileError, match=match):
        read_table_lightcurve(path, parse_columns(columns), band="V")


def test_time_system_is_required_and_named(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("time,mag,mag_err\n5000.1,12,0.01\n5000.2,12.1,0.01\n")
    obs = read_table_lightcurve(path, {}, band="V")
    with pytest.raises(LightCurveFileError, match="--time-system"):
        table_lightcurves(obs, target="X", ra=1.0, dec=2.0, time_system=None)
    with pytest.raises(LightCurveFileError, match=r"t.csv:2: .*--time-offset"):
        table_lightcurves(obs, target="X", ra=1.0, dec=2.0, time_system="BJD_TDB")
    with pytest.raises(LightCurveFileError, match="--ra/--dec.*define-targets"):
        table_lightcurves(obs, target="X", ra=None, dec=None, time_system="HJD", time_offset=2450000)
    lc = table_lightcurves(obs, target="X", ra=1.0, dec=2.0, time_system="BJD_TDB", time_offset=2450000)["V"]
    assert lc["time"][0] == pytest.approx(2455000.1)
    with pytest.raises(LightCurveFileError, match="--columns 'when=HJD'"):
        parse_columns("when=HJD")


AAVSO_HEADER = ("JD,Magnitude,Uncertainty,HQuncertainty,Band,Observer Code,Comment Code(s),Comp Star 1,Comp Star 2,"
                "Charts,Comments,Transfomed,Airmass,Validation Flag,Cmag,Kmag,HJD,Star Name,Observer Affiliation,"
                "Measurement Method,Grouping Method,ADS Reference,Digitizer,Credit")


def _aavso_row(jd, mag, err, band, obs, flag):
    return f"{jd},{mag},{err},,{band},{obs},,000-BBP-713,000-BBP-714,X12345,,0,1.2,{flag},12.1,12.3,,RR Lyr,AAVSO,STD,,,,"


def test_aavso_download(tmp_path):
    """Fainter-than and discrepant rows skipped with counts; uncertain kept; Sloan bands mapped; observers kept."""
    rows = [AAVSO_HEADER,
            _aavso_row(2459001.5, "7.95", "0.012", "V", "HMB", "Z"),
            _aavso_row(2459001.6, "<9.5", "", "Vis.", "ABC", "Z"),
            _aavso_row(2459001.7, "8.10:", "0.05", "V", "ABC", "V"),
            _aavso_row(2459001.8, "8.30", "0.02", "SG", "HMB", "T"),
            _aavso_row(2459001.9, "8.20", "", "Vis.", "XYZ", "U"),
            _aavso_row(2459002.0, "8.25", "0.015", "SG", "HMB", "Z")]
    path = tmp_path / "aavsodata.txt"
    path.write_text("\n".join(rows) + "\n")
    assert detect_format(path) == "aavso"
    obs = read_aavso(path)
    assert obs.skipped == {"fainter-than": 1, "discrepant": 1, "no uncertainty": 1}
    assert obs.notes == {"uncertain (:)": 1} and obs.time_system == "JD"
    assert list(obs.line) == [2, 4, 7] and list(obs.instrument) == ["HMB", "ABC", "HMB"]
    from openastro_parsl.ingest.lcformats import AAVSO_BANDS

    lcs = table_lightcurves(obs, target="RR Lyr", ra=291.37, dec=42.78, time_system=None, band_map=AAVSO_BANDS)
    assert sorted(lcs) == ["V", "g"] and list(lcs["V"]["mag"]) == [7.95, 8.10]
    assert lcs["V"].meta["source_time_system"] == "JD" and lcs["V"].meta["skipped"]["discrepant"] == 1
    bad = tmp_path / "aavso_bad.txt"
    bad.write_text("\n".join([AAVSO_HEADER, _aavso_row("x2459001.5", "7.95", "0.01", "V", "HMB", "Z")]) + "\n")
    with pytest.raises(LightCurveFileError, match=r"aavso_bad.txt:2: column 'JD'"):
        read_aavso(bad)


@needs_real
def test_k2_24_both_planets_in_bkjd():
    with pytest.raises(LightCurveFileError, match=r"--time-system.*2454833: --time-system BKJD"):
        read_transit_times(K2_24)
    t = read_transit_times(K2_24, time_system="BKJD")
    rows = [ln.split("\t") for ln in K2_24.read_text().splitlines()[6:16]]  # the table's ten data lines
    assert np.allclose(t["time"], [float(r[3]) + 2454833.0 for r in rows], atol=1e-9)
    assert list(t["planet"]) == [r[1] for r in rows] and list(t["error"]) == [float(r[4]) for r in rows]
    assert list(t["line"]) == list(range(7, 17)) and t.meta["source_time_system"] == "BKJD"
    per = transit_times_tables(t)
    assert sorted(per) == ["b", "c"] and (len(per["b"]), len(per["c"])) == (6, 4)
    # linear ephemerides of TTV'd planets: close to the published periods, not equal
    assert per["b"].meta["period"] == pytest.approx(20.8851, abs=0.02)
    assert per["c"].meta["period"] == pytest.approx(42.3633, abs=0.05)


def _etd(path, rows):
    path.write_text("Epoch;HJD;HJD err;DQ;Observer\n" + "\n".join(rows) + "\n")


def test_etd_table_in_hjd_with_data_quality(tmp_path):
    p, t0 = 2.7993, 2459000.1234
    epochs = [0, 5, 11, 20]
    jd = np.array([t0 + n * p for n in epochs])
    t, star, bjd = _truth(jd)
    hjd = (t + t.light_travel_time(star, "heliocentric")).jd
    path = tmp_path / "etd.csv"
    _etd(path, [f"{n};{h:.6f};0.0008;{dq};obs" for n, h, dq in zip(epochs, hjd, (1, 2, 5, 1), strict=True)])
    with pytest.raises(LightCurveFileError, match="coordinates.*--ra/--dec"):
        read_transit_times(path)
    table = read_transit_times(path, ra=RA, dec=DEC, max_dq=3, planet="b")
    assert table.meta["source_time_system"] == "HJD" and table.meta["n_skipped_dq"] == 1
    assert list(table["epoch"]) == [0, 5, 20] and set(table["planet"]) == {"b"}
    assert np.abs(table["time"] - bjd[[0, 1, 3]]).max() * 86400 < 0.1  # 6-decimal HJD: 0.04 s


def test_duplicate_epochs_refused_or_combined(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("planet,epoch,time,error\nb,0,2459000.1000,0.0010\nb,1,2459002.9000,0.0010\n"
                    "b,1,2459002.9030,0.0020\nc,4,2459010.0000,0.0010\nc,5,2459015.0000,0.0010\n")
    with pytest.raises(LightCurveFileError, match=r"dup.csv: .*planet b epoch 1 on lines 3, 4; pass --duplicates "
                                                  "combine"):
        read_transit_times(path)
    t = read_transit_times(path, duplicates="combine")
    row = t[(t["planet"] == "b") & (t["epoch"] == 1)]
    w = np.array([1 / 0.001 ** 2, 1 / 0.002 ** 2])
    assert float(row["time"][0]) == pytest.approx((w @ [2459002.9, 2459002.903]) / w.sum(), abs=1e-9)
    assert float(row["error"][0]) == pytest.approx(1 / np.sqrt(w.sum()))
    assert len(t) == 4 and t.meta["combined"][0]["lines"] == [3, 4]
    assert t.meta["combined"][0]["chi2"] == pytest.approx((0.003 ** 2) / (0.001 ** 2 + 0.002 ** 2), rel=1e-6)


@pytest.mark.parametrize("body,match", [
    ("planet,epoch,time\nb,1,2459000.1\n", "no error column"),
    ("planet,epoch,time,error\nb,1,2459000.1,abc\n", r":2: error 'abc' is not a number"),
    ("planet,epoch,time,error\nb,1.5,2459000.1,0.001\n", ":2: epoch '1.5' is not an integer"),
    ("planet,epoch,time,error\nb,1,2459000.1,-0.001\n", ":2: .*error positive"),
    ("planet,epoch,time,error\nb,1,59000.1,0.001\nb,2,59002.9,0.001\n", "--time-system .* --time-offset"),
    ("x,y\n1,2\n", "no header line"),
])
def test_transit_time_errors(tmp_path, body, match):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(LightCurveFileError, match=match):
        read_transit_times(path)


def test_blank_separated_light_curve_and_a_captioned_transit_table(tmp_path):
    lc = tmp_path / "lc.dat"
    lc.write_text("# reduced with my pipeline\nBJD  V   eV\n2459000.10 \t 12.01  0.01\n2459000.20   12.02\t0.01\n")
    obs = read_table_lightcurve(lc, parse_columns("time=BJD,mag=V,err=eV"), band="V")
    assert list(obs.value) == [12.01, 12.02] and list(obs.line) == [3, 4]
    tt = tmp_path / "tt.txt"
    tt.write_text("Epoch and time of the transits of XO-9 b\n\nepoch  bjd_tdb  err\n0 2459000.1 0.001\n"
                  "5 2459014.1 0.001\n")
    t = read_transit_times(tt)
    assert list(t["epoch"]) == [0, 5] and list(t["line"]) == [4, 5] and t.meta["source_time_system"] == "BJD_TDB"
