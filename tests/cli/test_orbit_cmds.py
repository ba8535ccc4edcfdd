"""`openastro-butler ingest-orbits`: an MPCORB file registered as the repository's `mpcorb`; a bad line
refused by file and line with the registry unchanged; re-runs need --replace; alerts plan with or without it."""

from __future__ import annotations

import gzip

import pytest
from butler_cli import registry_state, run

from openastro_parsl.butler import Butler

CERES = ("00001    3.33  0.15 K232P  17.21569   73.47045   80.26013   10.58634  0.0788175  0.21411523   2.7671817  0 "
         "MPO719049  7258 123 1801-2022 0.65 M-v 30l MPCLINUX   0000      (1) Ceres              20220916")
UKR = ("UKR0009 28.43  0.15 K171K 306.77024   97.57756  124.80541    5.15695  0.4202320  0.81787028   1.1324345    FO "
       "170526     4   1 55.3 min  0.26         Find_Orb   0000 UKR0009                     20170120")


def test_ingest_orbits_registers_refuses_and_replaces(tmp_path):
    repo = tmp_path / "repo"
    assert run("create", repo)[0] == 0
    bad = tmp_path / "bad.dat"
    bad.write_text(CERES + "\n" + UKR[:70] + " 0.4x02320" + UKR[80:] + "\n")
    before = registry_state(repo)
    code, out = run("ingest-orbits", repo, bad)
    assert code != 0 and f"{bad}:2: column e" in out
    assert registry_state(repo) == before  # nothing written

    gz = tmp_path / "MPCORB.DAT.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write("header\n" + "-" * 160 + "\n" + CERES + "\n")
    code, out = run("ingest-orbits", repo, gz)
    assert code == 0, out
    assert "mpcorb: 1 orbits registered in run orbits" in out and "chain defaults: raw/all, orbits" in out
    b = Butler(repo)
    (ref,) = b.registry.query_datasets("mpcorb", ["defaults"])
    assert ref.data_id == {} and list(b.get(ref)["designation"]) == ["(1) Ceres"]

    good = tmp_path / "two.dat"
    good.write_text(CERES + "\n" + UKR + "\n")
    code, out = run("ingest-orbits", repo, good)
    assert code != 0 and "already has an orbit file (1 orbits" in out and "--replace" in out
    code, out = run("ingest-orbits", repo, good, "--replace")
    assert code == 0 and "2 orbits replaced" in out
    (ref,) = Butler(repo).registry.query_datasets("mpcorb", ["orbits"])
    assert len(Butler(repo).get(ref)) == 2
    assert Butler(repo).verify()[1] == []


def test_ingest_known_sources(tmp_path):
    repo = tmp_path / "repo"
    assert run("create", repo)[0] == 0
    fields = tmp_path / "fields.csv"
    fields.write_text("name,ra,dec\nF1,150.1,2.2\n")
    assert run("define-fields", repo, fields)[0] == 0
    bad = tmp_path / "known.csv"
    bad.write_text("name,ra,dec,kind\nNGC 1,150.1,2.2,galaxy\n,150.2,2.2,variable\nX,10:00:30,+02:12:00,nebula\n")
    before = registry_state(repo)
    code, out = run("ingest-known-sources", repo, bad, "--field", "F1")
    assert code != 0 and f"{bad}:3: name is empty" in out and f"{bad}:4: kind 'nebula'" in out
    assert registry_state(repo) == before
    good = tmp_path / "good.csv"
    good.write_text("name,ra,dec,kind,radius_arcsec\nNGC 1,150.1,2.2,galaxy,\nV1,10:00:30,+02:12:00,variable,\n")
    code, out = run("ingest-known-sources", repo, good, "--field", "F1")
    assert code == 0 and "2 sources (1 galaxy, 1 variable) registered in run knownsources" in out, out
    (ref,) = Butler(repo).registry.query_datasets("knownSources", ["defaults"], data_id={"field": "F1"})
    t = Butler(repo).get(ref)
    assert list(t["radius_arcsec"]) == [10.0, 0.0] and t["ra"][1] == pytest.approx(150.125, abs=1e-9)
    code, out = run("ingest-known-sources", repo, good, "--field", "NOPE")
    assert code != 0 and "NOPE" in out
