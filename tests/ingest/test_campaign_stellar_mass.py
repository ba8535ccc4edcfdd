"""Target records carry the host star's mass: `define-targets` reads a `stellar_mass` column (or `mstar`), refuses
bad values row by row, and a repository of universe v2 gains the column when opened."""

from __future__ import annotations

import pytest

from openastro_parsl.ingest.campaign import define_targets
from openastro_parsl.ingest.tablefile import TableFileError
from openastro_parsl.registry.registry import Registry
from openastro_parsl.registry.universe import DimensionUniverse


def records(butler, dim):
    return {r["name"]: r for r in butler.registry.dimension_records(dim)}


def snapshot(butler):
    return {d: sorted(map(str, butler.registry.dimension_records(d))) for d in ("field", "target")}


def universe_v2_text() -> str:
    """The packaged universe as it was at version 2: no target stellar_mass."""
    text = DimensionUniverse.default().text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("stellar_mass:"))
    return text.replace(line + "\n", "").replace("\nversion: 3\n", "\nversion: 2\n")


def test_stellar_mass_column_and_its_alias(butler, tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("name,ra,dec,kind,stellar_mass\nK2-24,242.37,-24.99,transit_host,1.07\nV1,10,10,variable,\n")
    assert define_targets(butler, f).counts["target"] == {"inserted": 2, "updated": 0, "unchanged": 0}
    t = records(butler, "target")
    assert t["K2-24"]["stellar_mass"] == 1.07 and t["V1"]["stellar_mass"] is None
    f.write_text("name,ra,dec,kind,Mstar\nK2-24,242.37,-24.99,transit_host,1.12\n")
    assert define_targets(butler, f).counts["target"] == {"inserted": 0, "updated": 1, "unchanged": 0}
    assert records(butler, "target")["K2-24"]["stellar_mass"] == 1.12
    f.write_text("name,ra,dec,kind\nK2-24,242.37,-24.99,transit_host\n")  # no column: the stored value stays
    define_targets(butler, f)
    assert records(butler, "target")["K2-24"]["stellar_mass"] == 1.12


def test_bad_stellar_masses_are_named_and_nothing_is_written(butler, tmp_path):
    before = snapshot(butler)
    f = tmp_path / "bad.csv"
    f.write_text("name,ra,dec,kind,stellar_mass\nA,1,2,transit_host,0\nB,1,2,transit_host,heavy\n"
                 "C,1,2,transit_host,1e6\nD,1,2,transit_host,0.8\n")
    with pytest.raises(TableFileError) as info:
        define_targets(butler, f)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{f}: 3 bad row(s); nothing was written"
    assert [ln.split(": ")[0] for ln in lines[1:]] == [f"{f}:{n}" for n in (2, 3, 4)]
    assert "stellar_mass 0 is not between 0.01 and 300 Msun" in lines[1] and "'heavy' is not a number" in lines[2]
    f.write_text("name,ra,dec,kind,stellar_mass,mstar\nA,1,2,transit_host,1.0,1.0\n")
    with pytest.raises(TableFileError, match="columns stellar_mass, mstar all give stellar_mass; keep one"):
        define_targets(butler, f)
    e = tmp_path / "t.ecsv"
    e.write_text("# %ECSV 1.0\n# ---\n# datatype:\n# - {name: name, datatype: string}\n"
                 "# - {name: ra, unit: deg, datatype: float64}\n# - {name: dec, unit: deg, datatype: float64}\n"
                 "# - {name: kind, datatype: string}\n# - {name: stellar_mass, unit: kg, datatype: float64}\n"
                 "name ra dec kind stellar_mass\nA 1 2 transit_host 2e30\n")
    with pytest.raises(TableFileError) as info:
        define_targets(butler, e)
    assert str(info.value).count("\n") == 0 and "has unit 'kg'; stellar masses are in solar masses" in str(info.value)
    assert snapshot(butler) == before


def test_repository_of_universe_v2_gains_stellar_mass_on_open(tmp_path):
    url = f"sqlite:///{tmp_path / 'v2.sqlite3'}"
    old = DimensionUniverse(universe_v2_text())
    assert old.version == 2 and "period" in old["target"].metadata and "stellar_mass" not in old["target"].metadata
    reg = Registry.create(url, old)
    reg.sync_dimension_records("field", [{"name": "f", "ra": 1.0, "dec": 2.0}])
    reg.sync_dimension_records("target", [{"name": "t", "field": "f", "ra": 1.0, "dec": 2.0, "kind": "transit_host",
                                           "period": 2.5}])
    reg.close()
    reopened = Registry(url)
    assert reopened.universe.version == DimensionUniverse.default().version == 3
    (rec,) = reopened.dimension_records("target")
    assert rec["stellar_mass"] is None and rec["period"] == 2.5  # old values kept, the new one unknown
    assert reopened.update_dimension_records("target", [{"name": "t", "stellar_mass": 0.9}])["updated"] == 1
    reopened.close()
    assert Registry(url).dimension_records("target")[0]["stellar_mass"] == 0.9
