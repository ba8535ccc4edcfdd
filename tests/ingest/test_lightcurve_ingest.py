"""Readers for archival TESS/Kepler light curves and CSV transit-time tables."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from testdata import REAL_DATA

from openastro_parsl.ingest.lightcurves import BITMASKS, LightCurveFileError, read_mission_lightcurve
from openastro_parsl.ingest.transit_times import read_transit_times_csv, transit_times_tables

TESS = REAL_DATA / "hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits"
KEPLER = REAL_DATA / "kplr010666592-2009131110544_slc.fits"
needs_real = pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real data folder {REAL_DATA} absent")


@needs_real
@pytest.mark.parametrize("path,mission,ref,qcol", [(TESS, "TESS", 2457000.0, "QUALITY"),
                                                   (KEPLER, "Kepler", 2454833.0, "SAP_QUALITY")])
def test_mission_lightcurve(path, mission, ref, qcol):
    """BTJD/BKJD -> BJD_TDB (JD), default quality mask and NaNs dropped, flux normalised, schema of `lightcurve`."""
    lc = read_mission_lightcurve(path)
    with fits.open(path) as h:
        d = h[1].data
        good = (np.isfinite(d["TIME"]) & np.isfinite(d["PDCSAP_FLUX"]) & np.isfinite(d["PDCSAP_FLUX_ERR"])
                & ((d[qcol] & BITMASKS[mission]["default"]) == 0))
        raw_time = np.sort(np.asarray(d["TIME"][good], float))
        ra = h[0].header["RA_OBJ"]
    assert len(lc) == good.sum() and lc.meta["n_dropped"] == len(good) - good.sum()
    assert np.allclose(lc["time"], raw_time + ref, rtol=0, atol=1e-9)
    assert np.all(np.diff(lc["time"]) > 0)
    assert lc.meta["time_system"] == "BJD_TDB" and lc.meta["mission"] == mission and lc.meta["band"] == mission
    assert lc.meta["ra"] == pytest.approx(ra)
    assert np.median(lc["flux"]) == pytest.approx(1.0)
    assert np.allclose(lc["mag"], -2.5 * np.log10(lc["flux"]), atol=1e-9)
    assert {"time", "mag", "mag_err", "flux", "flux_err", "instrument", "exposure", "site", "outlier"} <= set(lc.colnames)
    assert set(lc["instrument"]) == {mission} and not lc["outlier"].any()
    sap = read_mission_lightcurve(path, flux="sap", quality_bitmask="none")
    assert len(sap) >= len(lc) and sap.meta["flux_column"] == "SAP_FLUX"
    hard = read_mission_lightcurve(path, quality_bitmask="hard")
    assert len(hard) <= len(lc)


@needs_real
def test_mission_lightcurve_round_trips_through_parquet(tmp_path):
    from openastro_parsl.datastore.formatters import formatter_named

    lc = read_mission_lightcurve(KEPLER)
    fmt = formatter_named("parquet")
    fmt.write(lc, tmp_path / "lc.parq")
    back = fmt.read(tmp_path / "lc.parq")
    assert np.array_equal(back["time"], lc["time"]) and back.meta["time_system"] == "BJD_TDB"


def test_bad_light_curve_files(tmp_path):
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not a fits file at all" * 10)
    with pytest.raises(LightCurveFileError, match="junk.fits"):
        read_mission_lightcurve(junk)
    image = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(image)
    with pytest.raises(LightCurveFileError, match="image.fits.*LIGHTCURVE"):
        read_mission_lightcurve(image)
    other = tmp_path / "other.fits"
    cols = [fits.Column(name=n, format="D", array=np.ones(3)) for n in ("TIME", "PDCSAP_FLUX", "PDCSAP_FLUX_ERR")]
    hdu = fits.BinTableHDU.from_columns(cols, name="LIGHTCURVE")
    fits.HDUList([fits.PrimaryHDU(header=fits.Header([("TELESCOP", "HST")])), hdu]).writeto(other)
    with pytest.raises(LightCurveFileError, match="neither TESS nor Kepler"):
        read_mission_lightcurve(other)


def test_transit_times_csv(tmp_path):
    """Two planets; linear ephemerides recovered; O-C of an injected TTV recovered."""
    rng = np.random.default_rng(4)
    path = tmp_path / "times.csv"
    lines = ["# exported transit times", "planet,epoch,time,error"]
    ttv = {}
    for planet, t0, period in (("b", 2459000.1234, 2.7993), ("c", 2459001.5, 5.6831)):
        for n in range(0, 30, 3):
            dt = 3.0 / 1440 * np.sin(2 * np.pi * n / 20) if planet == "b" else 0.0
            ttv[(planet, n)] = dt
            lines.append(f"{planet},{n},{t0 + n * period + dt + rng.normal(0, 2e-5):.6f},0.00002")
    path.write_text("\n".join(lines) + "\n")
    table = read_transit_times_csv(path)
    assert len(table) == 20 and set(table["planet"]) == {"b", "c"}
    per = transit_times_tables(table)
    assert per["c"].meta["period"] == pytest.approx(5.6831, abs=1e-5)
    assert per["c"].meta["chi2_red"] < 3
    b = per["b"]
    assert list(b.colnames) == ["epoch", "t_obs", "t_obs_err", "t_pred", "oc", "oc_err"]
    injected = np.array([ttv[("b", int(n))] for n in b["epoch"]])
    injected -= np.polyval(np.polyfit(np.asarray(b["epoch"], float), injected, 1), np.asarray(b["epoch"], float))
    assert np.allclose(b["oc"], injected, atol=1e-4)
    assert b.meta["chi2_red"] > 10  # the TTV is not a linear ephemeris


@pytest.mark.parametrize("body,match", [
    ("planet,epoch,time\nb,1,2459000.1\n", "no error column"),
    ("planet,epoch,time,error\nb,1,2459000.1,abc\n", r":2: error 'abc' is not a number"),
    ("planet,epoch,time,error\nb,1.5,2459000.1,0.001\n", "not an integer"),
    ("planet,epoch,time,error\nb,1,2459000.1,-0.001\n", "error positive"),
    ("planet,epoch,time,error\nb,1,59000.1,0.001\nb,2,59002.9,0.001\n", "--time-offset"),
    ("planet,epoch,time,error\nb,1,2459000.1,0.001\nb,1,2459000.2,0.001\n", "the same transit twice: planet b epoch 1 on lines 2, 3"),
])
def test_transit_times_csv_errors(tmp_path, body, match):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(LightCurveFileError, match=match):
        read_transit_times_csv(path)


def test_transit_times_offset(tmp_path):
    path = tmp_path / "mjd.csv"
    path.write_text("planet,epoch,time,error\nb,0,59000.1,0.001\nb,1,59002.9,0.001\n")
    t = read_transit_times_csv(path, time_offset=2400000.5)
    assert t["time"][0] == pytest.approx(2459000.6)
