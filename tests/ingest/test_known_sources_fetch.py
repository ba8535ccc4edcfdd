"""`openastro-butler fetch-known-sources`: a field's catalogued sources from NED (a real stored answer) and SIMBAD
(TAP) through a fake archive on 127.0.0.1, classified into knownSources kinds and registered; re-runs answer
from the cache offline; no cache and no network is one line with the registry unchanged; alerts vet against the
catalogues a pipeline names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from archive_server import UNREACHABLE, ArchiveServer
from astropy.table import Table
from butler_cli import registry_state, run
from testdata import make_small_repo

from openastro_parsl.butler import Butler
from openastro_parsl.ingest.catalog_fetch import classify, fetch_known_sources
from openastro_parsl.tasks.transient import AlertsConfig, AlertsTask

DATA = Path(__file__).resolve().parents[1] / "data"
NED_XML = DATA / "real" / "ned_near_position_2013-07-18.xml"  # everything within 2' of (83.822083, -5.391111)
SIMBAD_VOT = DATA / "archive" / "simbad_tap_trapezium.vot"


def _answer(path: str, q: dict[str, str]) -> tuple[bytes, str]:
    """NED's objsearch (GET) and a SIMBAD TAP /sync (POST) on one port."""
    return (NED_XML if path.endswith("objsearch") else SIMBAD_VOT).read_bytes(), "text/xml"


@pytest.fixture
def archive():
    with ArchiveServer(_answer, {"OPENASTRO_NED_SERVER": "/cgi-bin/objsearch",
                                 "OPENASTRO_SIMBAD_TAP": "/simbad/sim-tap"}) as server:
        yield server


@pytest.fixture
def repo(tmp_path):
    butler = make_small_repo(tmp_path, refcat=False)
    butler.registry.sync_dimension_records("field", [{"name": "trapezium", "ra": 83.822083, "dec": -5.391111}])
    return butler


def test_object_types_become_kinds():
    assert [classify(t) for t in ("G", "GPair", "QSO", "Sy1", "!V*", "RR*", "Or*", "*", "!*", "XrayS", "HII")] == [
        "galaxy", "galaxy", "qso", "qso", "variable", "variable", "variable", "star", "star", "other", "other"]


def test_fetch_from_ned_and_simbad_registers_known_sources(repo, archive, monkeypatch, tmp_path):
    archive.env(monkeypatch)
    cache = tmp_path / "archive.sqlite"
    code, out = run("fetch-known-sources", repo.root, "--field", "trapezium", "--catalog", "ned", "--catalog",
                    "simbad", "--radius", "0.034", "--cache", cache)
    assert code == 0, out
    assert f"NED: 475 sources, fetched from NED into the cache {cache}" in out
    assert f"SIMBAD: 5 sources, fetched from SIMBAD into the cache {cache}" in out
    assert ("knownSources {field=trapezium}: 480 sources (4 galaxy, 231 other, 1 qso, 206 star, 38 variable) "
            "registered in run knownsources") in out
    (ned_q,) = [q for p, q in archive.queries if p.endswith("objsearch")]
    assert ned_q["search_type"] == "Near Position Search" and float(ned_q["radius"]) == pytest.approx(0.034 * 60)
    (tap_q,) = [q for p, q in archive.queries if p.endswith("/sync")]
    assert "CIRCLE('ICRS', 83.82208300, -5.39111100, 0.03400000)" in tap_q["QUERY"]
    b = Butler(repo.root)
    (ref,) = b.registry.query_datasets("knownSources", ["defaults"], data_id={"field": "trapezium"})
    t = b.get(ref)
    ned, sim = t[t["catalog"] == "ned"], t[t["catalog"] == "simbad"]
    assert len(ned) == 475 and len(sim) == 5
    assert sorted(ned["name"][ned["kind"] == "galaxy"]) == ["2MASXi J0535137-052159", "2MASXi J0535210-052225"]
    assert np.all(ned["radius_arcsec"][ned["kind"] == "galaxy"] == 10.0)  # NED gives no size: --galaxy-radius
    assert int(np.sum(ned["kind"] == "variable")) == 37 and "AF Ori" in list(ned["name"][ned["kind"] == "variable"])
    assert dict(zip(sim["name"], sim["kind"], strict=True)) == {
        "NGC 9999": "galaxy", "V* AF Ori": "variable", "QSO J0535-0524": "qso", "HD 37022": "star",
        "LEDA 9999": "galaxy"}
    assert list(sim["radius_arcsec"][sim["name"] == "NGC 9999"]) == [15.0]  # half of a 0.5' major axis
    assert f"in run knownsources ({b.path(ref)})" in out


def test_rerun_offline_and_no_cache_no_network(repo, archive, monkeypatch, tmp_path):
    archive.env(monkeypatch)
    cache = tmp_path / "archive.sqlite"
    assert run("fetch-known-sources", repo.root, "--field", "trapezium", "--catalog", "ned", "--cache", cache)[0] == 0
    n = len(archive.queries)
    got = fetch_known_sources(repo, "trapezium", ("ned",), radius_deg=0.02, cache=cache)  # inside the cached cone
    assert len(archive.queries) == n and got.notes[0].startswith("NED: ") and "from the cache" in got.notes[0]
    assert 0 < len(got.table) < 475
    archive.env(monkeypatch, UNREACHABLE)
    code, out = run("fetch-known-sources", repo.root, "--field", "trapezium", "--catalog", "ned", "--cache", cache,
                    "--refresh", "--replace")
    assert code == 0 and "offline: from the cache" in out and "archive unreachable (ConnectionError" in out
    before = registry_state(repo.root)
    code, out = run("fetch-known-sources", repo.root, "--field", "trapezium", "--catalog", "simbad", "--cache", cache,
                    "--replace")
    assert code != 0 and len(out.strip().splitlines()) == 1, out
    assert "SIMBAD cone ra=83.82208 dec=-5.39111 r=0.5000 deg is not in the cache" in out
    code, out = run("fetch-known-sources", repo.root, "--field", "trapezium", "--catalog", "simbad", "--cache", cache,
                    "--offline", "--replace")
    assert code != 0 and "fetching is off" in out
    assert registry_state(repo.root) == before


def _frame():
    """Two brightening candidates: 5" from NGC 9999's centre (SIMBAD galaxy, radius 15") and on V* AF Ori."""
    ra = [83.8300 + 5 / 3600 / np.cos(np.radians(-5.38)), 83.8278]
    dec = [-5.3800, -5.3872]
    n = 2
    t = Table({"id": np.arange(n), "ra": ra, "dec": dec, "x": [10.0, 20.0], "y": [10.0, 10.0], "flux": [500.0] * n,
               "flux_err": [10.0] * n, "snr": [50.0] * n, "mag": [17.0] * n, "mag_err": [0.02] * n,
               "rb_score": [0.99] * n, "fwhm": [3.0] * n, "flags": [0] * n})
    t.meta.update({"psf_fwhm": 3.0, "pixel_scale_arcsec": 0.5, "mjd_mid": 61130.2, "band": "r"})
    stamp = np.zeros((n, 9, 9))
    return t, {"id": np.arange(n), "science": stamp, "reference": stamp, "difference": stamp,
               "sigma": np.ones((n, 9, 9))}


def test_alerts_vet_against_the_catalogues_the_pipeline_names(repo, archive, monkeypatch, tmp_path):
    archive.env(monkeypatch)
    known = fetch_known_sources(repo, "trapezium", ("ned", "simbad"), radius_deg=0.034,
                                cache=tmp_path / "c.sqlite").table
    t, cutouts = _frame()
    s = AlertsTask().run(t, cutouts, None, orbits=[], known=[known])["alerts"]
    (a,) = s["alerts"]  # the variable is not alerted (NED's AF Ori and SIMBAD's V* AF Ori)
    assert a["candidate_id"] == 0 and s["rejected"]["catalogued_source"] == 1
    assert a["host_galaxy"]["name"] == "NGC 9999" and a["host_galaxy"]["sep_arcsec"] == pytest.approx(5.0, abs=0.01)
    assert a["vetting"]["catalogued_sources"]["decision"] == "host_galaxy"
    # NED alone: no galaxy there, but AF Ori still keeps the second one out
    s2 = AlertsTask(AlertsConfig(known_source_catalogs=["ned"])).run(t, cutouts, None, orbits=[], known=[known])
    (a2,) = s2["alerts"]["alerts"]
    assert a2["host_galaxy"] is None and a2["vetting"]["catalogued_sources"]["decision"] == "clear"
    # a 30" match radius reaches AF Ori (29" away) from the galaxy's candidate too: both kept out
    s3 = AlertsTask(AlertsConfig(known_source_radius_arcsec=30.0)).run(t, cutouts, None, orbits=[], known=[known])
    assert s3["alerts"]["alerts"] == [] and s3["alerts"]["rejected"]["catalogued_source"] == 2


def test_without_the_catalogues_a_pipeline_names_alerts_are_unvetted_not_lost(repo, archive, monkeypatch, tmp_path):
    """No knownSources (no cache, no network when it was fetched): the alerts are still made, marked unvetted
    with the command to run; a named catalogue the dataset lacks is listed as missing."""
    t, cutouts = _frame()
    cfg = AlertsConfig(known_source_catalogs=["simbad"])
    for known in ([], None):
        s = AlertsTask(cfg).run(t, cutouts, None, orbits=[], known=known)["alerts"]
        assert len(s["alerts"]) == 2
        assert s["catalogued_sources_vetting"]["status"] == "unvetted"
        assert "fetch-known-sources" in s["catalogued_sources_vetting"]["note"]
        for a in s["alerts"]:
            v = a["vetting"]["catalogued_sources"]
            assert v["status"] == "unvetted" and v["decision"] == "unvetted" and "fetch-known-sources" in v["note"]
    s = AlertsTask().run(t, cutouts, None, orbits=[], known=None)["alerts"]
    assert s["catalogued_sources_vetting"]["status"] == "not_configured"
    archive.env(monkeypatch)
    ned = fetch_known_sources(repo, "trapezium", ("ned",), radius_deg=0.034, cache=tmp_path / "c.sqlite").table
    s = AlertsTask(cfg).run(t, cutouts, None, orbits=[], known=[ned])["alerts"]
    head = s["catalogued_sources_vetting"]
    assert head["missing"] == ["simbad"] and head["catalogs"] == [] and head["n_sources"] == 0
    assert len(s["alerts"]) == 2  # nothing of SIMBAD to reject them with
    s = AlertsTask().run(t, cutouts, None, orbits=[], known=[ned])["alerts"]
    assert s["catalogued_sources_vetting"] == {"status": "vetted", "catalogs": ["ned"], "n_sources": 475}
