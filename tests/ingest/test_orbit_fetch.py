"""`openastro-butler fetch-orbits`: SkyBoT chooses the bodies crossing a field, the MPC gives their orbits, both
through astroquery against a fake archive on 127.0.0.1 serving stored answers (tests/data/archive/README.md: a real
SkyBoT VOTable, Ceres' MPC record); the MPCORB file is registered as ingest-orbits registers one; re-runs answer
from the cache offline; no cache and no network is one line with the registry unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from archive_server import UNREACHABLE, ArchiveServer
from butler_cli import registry_state, run
from testdata import make_small_repo

from openastro_parsl.astro.mpcorb import parse_mpcorb_line
from openastro_parsl.astro.orbits import predict
from openastro_parsl.butler import Butler
from openastro_parsl.errors import OpenAstroError
from openastro_parsl.ingest.orbit_fetch import fetch_orbits, mpc_record_line, night_epochs

DATA = Path(__file__).resolve().parents[1] / "data"
SKYBOT_VOT = DATA / "real" / "skybot_cone_2025-01-02.vot"  # bodies within 720" of (81.2833, +4.49278), 2025-01-02
CERES_JSON = DATA / "archive" / "mpc_search_orbits_ceres.json"
CERES = ("00001    3.33  0.15 K232P  17.21569   73.47045   80.26013   10.58634  0.0788175  0.21411523   2.7671817  0 "
         "MPO719049  7258 123 1801-2022 0.65 M-v 30l MPCLINUX   0000      (1) Ceres              20220916")


def _record(number, designation, name, a, e, incl, M) -> dict:
    """An MPC orbit record in the service's form (numbers as strings); elements invented for the SkyBoT bodies."""
    rec = json.loads(CERES_JSON.read_text())[0]
    rec.update({"number": number, "designation": designation, "name": name, "semimajor_axis": f"{a}",
                "eccentricity": f"{e}", "inclination": f"{incl}", "mean_anomaly": f"{M}", "absolute_magnitude": "7.1"})
    return rec


def _bodies() -> dict[str, list[dict]]:
    """The MPC's answers by query: Ceres' real record, invented elements for the other bodies SkyBoT finds."""
    return {"number=1": json.loads(CERES_JSON.read_text()),
            "number=229762": [_record(229762, "2002 KX14", "G!kun||'homdima", 43.1, 0.04, 7.8, 120.0)],
            "number=523748": [_record(523748, "2014 UP224", None, 44.0, 0.05, 2.1, 200.0)],
            "designation=2019 RB21": [_record(None, "2019 RB21", None, 2.7, 0.12, 4.0, 10.0)],
            "designation=2007 TE366": [_record(None, "2007 TE366", None, 2.1, 0.3, 9.0, 300.0)]}


def _answer(path: str, q: dict[str, str]) -> tuple[bytes, str]:
    """SkyBoT's conesearch (a stored VOTable) and the MPC's search_orbits (JSON records) on one port."""
    if path.endswith("conesearch.php"):
        return SKYBOT_VOT.read_bytes(), "text/xml"
    key = next((f"{k}={q[k]}" for k in ("number", "designation", "name") if k in q), "")
    return json.dumps(_bodies().get(key, [])).encode(), "application/json"


@pytest.fixture
def archive():
    with ArchiveServer(_answer, {"OPENASTRO_SKYBOT_SERVER": "/webservices/skybot/api/conesearch.php",
                                 "OPENASTRO_MPC_SERVER": ""}) as server:
        yield server


@pytest.fixture
def repo(tmp_path):
    butler = make_small_repo(tmp_path, refcat=False)
    butler.registry.sync_dimension_records("field", [{"name": "orion", "ra": 81.2833, "dec": 4.49278}])
    return butler


def test_mpc_record_becomes_the_mpcorb_line_mpc_publishes():
    line = mpc_record_line(json.loads(CERES_JSON.read_text())[0], "Ceres")
    got, real = parse_mpcorb_line(line), parse_mpcorb_line(CERES)
    for k in ("packed", "designation", "H", "G", "epoch_mjd", "M", "peri", "node", "incl", "e", "a"):
        assert got[k] == real[k], k
    assert got["n"] == pytest.approx(real["n"], rel=2e-6)  # n from a by Gauss's constant, as MPC computes it
    with pytest.raises(OpenAstroError, match="Ceres: the MPC record has no usable eccentricity"):
        mpc_record_line({**json.loads(CERES_JSON.read_text())[0], "eccentricity": None}, "Ceres")


def test_fetch_orbits_registers_the_bodies_skybot_finds(repo, archive, monkeypatch, tmp_path):
    archive.env(monkeypatch)
    cache = tmp_path / "archive.sqlite"
    before = registry_state(repo.root)
    code, out = run("fetch-orbits", repo.root, "--field", "orion", "--epoch", "2025-01-02", "--designations", "1",
                    "--cache", cache, "--radius", "0.2")
    assert code == 0, out
    assert "field orion: 4 minor-planet sighting(s) on 1 date(s) from SkyBoT" in out
    assert f"fetched from the archives {cache}" in out and "registered in run orbits" in out
    sky = [q for p, q in archive.queries if p.endswith("conesearch.php")]
    assert len(sky) == 1 and float(sky[0]["-ep"]) == 2460677.5 and float(sky[0]["-rd"]) == pytest.approx(0.2)
    assert float(sky[0]["-ra"]) == pytest.approx(81.2833) and sky[0]["-mime"] == "votable"
    b = Butler(repo.root)
    (ref,) = b.registry.query_datasets("mpcorb", ["defaults"])
    t = b.get(ref)
    assert sorted(t["designation"]) == ["(1) Ceres", "(229762) G!kun||'homdima", "(523748) 2014 UP224",
                                        "2007 TE366", "2019 RB21"]
    assert registry_state(repo.root) != before
    # Ceres from the fetched elements is where the real MPCORB line puts it (n from a differs in the 8th digit)
    ceres = t[list(t["designation"]).index("(1) Ceres")]
    real = (tmp_path / "ceres.dat")
    real.write_text(CERES + "\n")
    from openastro_parsl.astro.mpcorb import read_mpcorb

    p1, p2 = predict(t[[list(t["designation"]).index("(1) Ceres")]], 59928.9, None), predict(read_mpcorb(real),
                                                                                              59928.9, None)
    sep = np.hypot((p1.ra[0] - p2.ra[0]) * np.cos(np.radians(p2.dec[0])), p1.dec[0] - p2.dec[0]) * 3600
    assert ceres["a"] == 2.7671817 and sep < 1.0


def test_rerun_answers_from_the_cache_offline_and_unreachable(repo, archive, monkeypatch, tmp_path):
    archive.env(monkeypatch)
    cache = tmp_path / "archive.sqlite"
    assert run("fetch-orbits", repo.root, "--field", "orion", "--epoch", "2025-01-02", "--cache", cache)[0] == 0
    n = len(archive.queries)
    # a smaller cone at the same date is inside the cached one: no new question
    got = fetch_orbits(repo, fields=("orion",), epochs=(60677.0,), radius_deg=0.1, cache=cache)
    assert len(archive.queries) == n and len(got.lines) == 4
    assert got.notes[-1] == f"from the cache (--refresh to fetch again) {cache}"
    archive.env(monkeypatch, UNREACHABLE)
    code, out = run("fetch-orbits", repo.root, "--field", "orion", "--epoch", "2025-01-02", "--cache", cache,
                    "--refresh", "--replace")
    assert code == 0, out
    assert "offline: from the cache (archive unreachable (ConnectionError" in out and "replaced in run orbits" in out
    code, out = run("fetch-orbits", repo.root, "--field", "orion", "--epoch", "2025-01-02", "--cache", cache,
                    "--offline", "--replace")
    assert code == 0 and f"offline: from the cache {cache}" in out


def test_no_cache_and_no_network_is_one_line_and_the_registry_unchanged(repo, archive, monkeypatch, tmp_path):
    archive.env(monkeypatch, UNREACHABLE)
    cache = tmp_path / "empty.sqlite"
    before = registry_state(repo.root)
    code, out = run("fetch-orbits", repo.root, "--field", "orion", "--epoch", "2025-01-02", "--cache", cache)
    assert code != 0 and len(out.strip().splitlines()) == 1, out
    assert "SkyBoT cone ra=81.28330 dec=4.49278" in out and f"is not in the cache {cache} and the archive " \
                                                            "unreachable" in out
    code, out = run("fetch-orbits", repo.root, "--designations", "1", "--cache", cache, "--offline")
    assert code != 0 and "MPC orbit of '1' is not in the cache" in out and "fetching is off" in out
    assert registry_state(repo.root) == before


def test_field_dates_come_from_its_exposures_nights(repo, archive, monkeypatch, tmp_path):
    archive.env(monkeypatch)
    nights = night_epochs(repo, "demo1")
    assert len(nights) >= 1
    got = fetch_orbits(repo, fields=("demo1",), cache=tmp_path / "c.sqlite")
    sky = [q for p, q in archive.queries if p.endswith("conesearch.php")]
    assert len(sky) == len(nights)
    assert sorted(float(q["-ep"]) for q in sky) == pytest.approx(sorted(m + 2400000.5 for m, _ in nights))
    assert len(got.lines) == 4
    with pytest.raises(OpenAstroError, match="field 'orion' has no exposures"):
        fetch_orbits(repo, fields=("orion",), cache=tmp_path / "c.sqlite")
