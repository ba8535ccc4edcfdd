"""Reference catalogue access: local files, the SQLite region cache, and Gaia DR3 when (not) reachable."""

from __future__ import annotations

import sqlite3
from functools import partial

import numpy as np
import pytest
from astropy.table import Table

from openastro_parsl.astro import refcat as R

# A TAP server that certainly refuses: astroquery's real client, a real socket, no network needed.
UNREACHABLE = "http://127.0.0.1:9/"


@pytest.fixture
def catalogue() -> Table:
    """A field of 400 stars around (359.9, -5): straddles RA = 0, like a real cone can."""
    rng = np.random.default_rng(5)
    n = 400
    ra = np.mod(359.9 + rng.uniform(-0.3, 0.3, n) / np.cos(np.deg2rad(5)), 360.0)
    dec = -5.0 + rng.uniform(-0.3, 0.3, n)
    r = rng.uniform(11, 19, n)
    return Table({"id": np.arange(1, n + 1), "ra": ra, "dec": dec, "g": r + rng.uniform(0.2, 1.4, n), "r": r,
                  "g_err": np.full(n, 0.02), "r_err": np.full(n, 0.02), "sel_mag": r + 0.3})


class CountingFetch:
    """A catalogue 'archive' that serves cones of a table and counts how often it is asked."""

    def __init__(self, table: Table):
        self.table, self.calls = table, []

    def __call__(self, ra, dec, radius, mag_limit):
        self.calls.append((ra, dec, radius, mag_limit))
        out = R.cone(self.table, ra, dec, radius)
        return out[out["sel_mag"] <= mag_limit] if "sel_mag" in out.colnames else out


def test_region_containment_across_ra_zero_and_near_the_pole():
    big = R.Region(359.95, -5.0, 0.2)
    assert big.contains(R.Region(0.05, -5.0, 0.05))  # across RA = 0: 0.1 deg apart (cos dec ~ 1)
    assert not big.contains(R.Region(0.05, -5.0, 0.15))  # sticks out
    assert not big.contains(R.Region(180.0, -5.0, 0.01))
    assert big.contains(big)
    polar = R.Region(0.0, 89.9, 0.3)
    assert polar.contains(R.Region(180.0, 89.95, 0.1))  # the pole is 0.1 from each centre
    assert not polar.contains(R.Region(180.0, 89.5, 0.1))
    np.testing.assert_allclose(R.angular_separation(10, 89.9, 190, 89.9), 0.2, atol=1e-9)
    np.testing.assert_allclose(R.angular_separation(359.99, 0, 0.01, 0), 0.02, atol=1e-9)


def test_sqlite_round_trip_and_cone_cut(tmp_path, catalogue):
    cache = R.RefcatCache(tmp_path / "rc.sqlite")
    region = R.Region(359.9, -5.0, 0.25)
    inside = R.cone(catalogue, region.ra, region.dec, region.radius)
    rid = cache.put("test", region, 20.0, inside)
    again = R.RefcatCache(tmp_path / "rc.sqlite")  # a new process: the file is the cache
    (rec,) = again.regions()
    assert rec["region_id"] == rid and rec["n_rows"] == len(inside) and rec["radius"] == 0.25
    back = again.get(rid)
    assert list(back["id"]) == list(inside["id"])
    for c in ("ra", "dec", "g", "r", "g_err", "r_err", "sel_mag"):
        np.testing.assert_array_equal(back[c], inside[c])  # REAL columns keep every bit
    assert np.isnan(back["pmra"]).all()  # absent optional columns come back as NaN, not 0
    small = R.Region(0.0, -5.05, 0.1)
    cut = again.get(rid, small, mag_limit=16.0)
    sep = R.angular_separation(small.ra, small.dec, inside["ra"], inside["dec"])
    assert sorted(cut["id"]) == sorted(inside["id"][(sep <= 0.1) & (inside["sel_mag"] <= 16.0)])
    assert 0 < len(cut) < len(inside)


def test_cached_region_is_answered_without_the_network(tmp_path, catalogue):
    fetch = CountingFetch(catalogue)
    cache = R.RefcatCache(tmp_path / "rc.sqlite")
    first = R.query_refcat(359.9, -5.0, 0.2, cache=cache, fetch=fetch, mag_limit=18.0)
    assert len(fetch.calls) == 1 and len(first) > 50
    # the same cone, a cone inside it, a brighter limit: all from the cache
    same = R.query_refcat(359.9, -5.0, 0.2, cache=cache, fetch=fetch, mag_limit=18.0)
    inner = R.query_refcat(0.0, -4.95, 0.05, cache=cache, fetch=fetch, mag_limit=18.0)
    bright = R.query_refcat(359.9, -5.0, 0.1, cache=cache, fetch=fetch, mag_limit=15.0)
    assert len(fetch.calls) == 1
    assert list(same["id"]) == list(first["id"])
    expected = R.cone(catalogue, 0.0, -4.95, 0.05)
    assert sorted(inner["id"]) == sorted(expected["id"][expected["sel_mag"] <= 18.0]) and len(inner) > 0
    assert bright["sel_mag"].max() <= 15.0
    # ... and it survives the network going away: a fetch that cannot connect is never tried
    offline = R.query_refcat(359.9, -5.0, 0.15, cache=tmp_path / "rc.sqlite",
                             fetch=partial(R.gaia_dr3_fetch, server=UNREACHABLE))
    assert len(offline) > 0
    # a cone sticking out of the cached one, or a fainter limit, needs the archive again
    R.query_refcat(359.9, -5.0, 0.25, cache=cache, fetch=fetch, mag_limit=18.0)
    R.query_refcat(359.9, -5.0, 0.1, cache=cache, fetch=fetch, mag_limit=19.0)
    assert len(fetch.calls) == 3 and len(cache.regions()) == 3


def test_uncached_cone_with_the_archive_unreachable_is_a_clear_error(tmp_path):
    cache_path = tmp_path / "rc.sqlite"
    with pytest.raises(R.RefcatUnavailable) as info:
        R.query_refcat(150.1, 2.2, 0.1, cache=cache_path, fetch=partial(R.gaia_dr3_fetch, server=UNREACHABLE))
    text = str(info.value)
    assert "ra=150.10000 dec=2.20000 r=0.1000" in text and str(cache_path) in text and "unreachable" in text
    with pytest.raises(R.RefcatUnavailable, match="fetching is off"):
        R.query_refcat(150.1, 2.2, 0.1, cache=cache_path, offline=True)
    assert R.RefcatCache(cache_path).regions() == []  # nothing half-written

    def broken(ra, dec, radius, mag_limit):  # a bug, not an outage: not disguised as one
        raise KeyError("phot_g_mean_mag")

    with pytest.raises(KeyError):
        R.query_refcat(150.1, 2.2, 0.1, cache=cache_path, fetch=broken)


def test_gaia_rows_become_a_reference_catalogue():
    raw = Table({"SOURCE_ID": np.array([4295806720, 38655544960], dtype=np.int64), "ra": [150.1, 150.2],
                 "dec": [2.2, 2.3], "pmra": [1.5, -3.0], "pmdec": [0.5, 2.0], "phot_g_mean_mag": [13.1, 16.9],
                 "g_sdss_mag": [13.6, 17.8], "g_sdss_flux": [1000.0, 20.0], "g_sdss_flux_error": [5.0, 0.4],
                 "r_sdss_mag": [13.0, 16.7], "r_sdss_flux": [2000.0, 50.0], "r_sdss_flux_error": [4.0, 0.5],
                 "phot_variable_flag": ["VARIABLE", "NOT_AVAILABLE"]})
    rc = R.gaia_to_refcat(raw)
    assert list(rc["variable"]) == [True, False]
    assert list(rc.colnames[:7]) == list(R.REFCAT_COLUMNS)
    assert list(rc["id"]) == [4295806720, 38655544960]
    np.testing.assert_allclose(rc["g_err"], 2.5 / np.log(10) * np.array([0.005, 0.02]))
    np.testing.assert_allclose(rc["r_err"], 2.5 / np.log(10) * np.array([0.002, 0.01]))
    moved = R.propagate(rc, 2026.0)
    np.testing.assert_allclose((moved["dec"] - rc["dec"]) * 3.6e6, [5.0, 20.0], rtol=1e-9)  # mas over 10 yr
    np.testing.assert_allclose((moved["ra"] - rc["ra"]) * 3.6e6 * np.cos(np.deg2rad(rc["dec"])), [15.0, -30.0],
                               rtol=1e-6)
    assert "SELECT" in R.GAIA_ADQL and "synthetic_photometry_gspc" in R.GAIA_ADQL
    assert "phot_variable_flag" in R.GAIA_ADQL


def test_variable_flag_survives_the_cache_and_old_caches_gain_it(tmp_path, catalogue):
    """A cache written before the flag existed gets the column on open; flagged rows come back flagged."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript(R._SCHEMA.replace(", variable REAL", ""))
    con.close()
    cache = R.RefcatCache(path)
    cat = catalogue.copy()
    cat["variable"] = np.arange(len(cat)) % 7 == 0
    rid = cache.put("test", R.Region(359.9, -5.0, 1.0), 20.0, cat)
    back = cache.get(rid)
    assert back["variable"].dtype == bool
    assert list(back["variable"]) == list(cat["variable"])


def test_local_catalogue_files_are_validated(tmp_path, catalogue):
    good = tmp_path / "refcat.ecsv"
    catalogue.write(good, format="ascii.ecsv")
    t = R.read_refcat(good)
    assert len(t) == len(catalogue) and t["id"].dtype == np.int64
    bad = catalogue.copy()
    bad.remove_column("r_err")
    bad.write(tmp_path / "bad.ecsv", format="ascii.ecsv")
    with pytest.raises(R.RefcatError, match=r"bad\.ecsv: missing column\(s\) r_err"):
        R.read_refcat(tmp_path / "bad.ecsv")
    with pytest.raises(R.RefcatError, match="no such reference catalogue"):
        R.read_refcat(tmp_path / "absent.fits")
    (tmp_path / "junk.fits").write_bytes(b"not a fits file" * 100)
    with pytest.raises(R.RefcatError, match="junk.fits: unreadable"):
        R.read_refcat(tmp_path / "junk.fits")


def test_demo_refcat_through_the_cache(demo, tmp_path):
    """The survey's own catalogue served as the 'archive': the field's cone comes back whole from SQLite."""
    local = R.read_refcat(demo.survey_dir / "refcat.ecsv")
    field = demo.truth["fields"][0]
    fetch = CountingFetch(local)
    radius = field["refcat_half_width_arcmin"] / 60.0
    got = R.query_refcat(field["ra"], field["dec"], radius, cache=tmp_path / "c.sqlite", fetch=fetch,
                         catalogue="demo", mag_limit=99.0)
    again = R.query_refcat(field["ra"], field["dec"], radius / 2, cache=tmp_path / "c.sqlite",
                           fetch=fetch, catalogue="demo", mag_limit=99.0)
    assert len(fetch.calls) == 1 and 0 < len(again) < len(got) <= len(local)
    with sqlite3.connect(tmp_path / "c.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM stars").fetchone()[0] == len(got)
