"""A campaign from files: targets and fields defined, updated on re-runs, refused row by row, and derived from
the raws' pointings; old repositories gain the target ephemeris columns when opened."""

from __future__ import annotations

import pytest

from openastro_parsl.butler import Butler
from openastro_parsl.errors import ConflictError
from openastro_parsl.ingest.campaign import (
    cluster_pointings,
    define_fields,
    define_targets,
    fields_from_exposures,
    nearest_field,
    position_name,
)
from openastro_parsl.ingest.tablefile import TableFileError
from openastro_parsl.registry.refs import DatasetType
from openastro_parsl.registry.registry import Registry
from openastro_parsl.registry.universe import DimensionUniverse


def records(butler, dim):
    return {r["name"]: r for r in butler.registry.dimension_records(dim)}


def snapshot(butler):
    return {d: sorted(map(str, butler.registry.dimension_records(d))) for d in ("field", "target")}


@pytest.fixture
def campaign(butler, tmp_path):
    (tmp_path / "fields.csv").write_text("# the survey's fields\nname,ra,dec\nW12,07:30:00,+29:40:00\n"
                                         "far,200.0,-10.0\n")
    define_fields(butler, tmp_path / "fields.csv")
    return butler


def test_targets_get_fields_ephemerides_and_sexagesimal_positions(campaign, tmp_path):
    f = tmp_path / "targets.csv"
    f.write_text("name,ra,dec,kind,period,epoch,duration,field,notes\n"
                 "WASP-12,07h30m19.0s,+29d40m20s,transit_host,1.09142,2457010.51,0.125,,hot Jupiter\n"
                 "V1,112.6,29.5,Variable,0.6,,,,\n"            # 0.2 deg from W12: joins it
                 "X1,210.0,-10.0,transient,,,,,\n"              # nowhere near a field: its own
                 "S1,200.1,-10.0,field star,,,,far,\n")         # named explicitly
    report = define_targets(campaign, f)
    assert report.counts["target"] == {"inserted": 4, "updated": 0, "unchanged": 0}
    assert report.new_fields == ["X1"] and report.notes == ["ignored column(s): notes"]
    t = records(campaign, "target")
    assert t["WASP-12"]["ra"] == pytest.approx(15 * (7 + 30 / 60 + 19.0 / 3600))
    assert t["WASP-12"]["dec"] == pytest.approx(29 + 40 / 60 + 20 / 3600)
    assert (t["WASP-12"]["period"], t["WASP-12"]["epoch"], t["WASP-12"]["duration"]) == (1.09142, 2457010.51, 0.125)
    assert {n: (r["field"], r["kind"]) for n, r in t.items()} == {
        "WASP-12": ("W12", "transit_host"), "V1": ("W12", "variable"), "X1": ("X1", "transient"),
        "S1": ("far", "field_star")}
    assert t["V1"]["epoch"] is None
    assert (records(campaign, "field")["X1"]["ra"], records(campaign, "field")["X1"]["dec"]) == (210.0, -10.0)


def test_rerun_updates_changed_rows_and_never_duplicates(campaign, tmp_path):
    f = tmp_path / "targets.csv"
    f.write_text("name,ra,dec,kind,period\nT1,112.5,29.6,variable,0.6\nT2,112.4,29.7,variable,1.5\n")
    define_targets(campaign, f)
    assert define_targets(campaign, f).counts["target"] == {"inserted": 0, "updated": 0, "unchanged": 2}
    f.write_text("name,ra,dec,kind,period\nT1,112.5,29.6,variable,0.61\nT2,112.4,29.7,variable,1.5\n"
                 "T3,112.3,29.8,transit_host,\n")
    report = define_targets(campaign, f)
    assert report.counts["target"] == {"inserted": 1, "updated": 1, "unchanged": 1}
    t = records(campaign, "target")
    assert sorted(t) == ["T1", "T2", "T3"] and t["T1"]["period"] == 0.61 and t["T1"]["field"] == "W12"
    # a field's centre moves with its file; the others stay
    (tmp_path / "f2.csv").write_text("name,ra,dec\nW12,112.51,29.66\nfar,200.0,-10.0\n")
    assert define_fields(campaign, tmp_path / "f2.csv").counts["field"] == {"inserted": 0, "updated": 1, "unchanged": 1}


def test_bad_rows_are_each_named_and_nothing_is_written(campaign, tmp_path):
    before = snapshot(campaign)
    f = tmp_path / "bad.csv"
    f.write_text("name,ra,dec,kind,period,epoch,field\n"
                 "A,25:00:00,10,variable,,,\n"         # line 2: hours out of range
                 "B,10,95,star,,,\n"                  # line 3: dec, kind
                 ",1,2,variable,,,\n"                  # line 4: no name
                 "A,1,2,transient,,,\n"               # line 5: duplicate
                 "C,1,2,variable,-1,5000.5,nowhere\n"  # line 6: period, epoch, unknown field
                 "D,1,2\n"                             # line 7: short row
                 "E,1,2,variable,,,\n")               # line 8: fine
    with pytest.raises(TableFileError) as info:
        define_targets(campaign, f)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{f}: 6 bad row(s); nothing was written"
    assert [ln.split(": ")[0] for ln in lines[1:]] == [f"{f}:{n}" for n in (2, 3, 3, 4, 5, 6, 6, 6, 7)]
    assert "kind 'star' is not one of transit_host, planet, variable, transient, field_star" in lines[3]
    assert "is already on" in lines[5] and f"{f}:2" in lines[5]
    assert "not a full Julian date" in lines[7] and "field 'nowhere' is not defined" in lines[8]
    assert snapshot(campaign) == before


def test_ecsv_units_are_honoured(campaign, tmp_path):
    f = tmp_path / "t.ecsv"
    f.write_text("# %ECSV 1.0\n# ---\n# datatype:\n# - {name: name, datatype: string}\n"
                 "# - {name: ra, unit: hourangle, datatype: float64}\n# - {name: dec, unit: deg, datatype: float64}\n"
                 "# - {name: kind, datatype: string}\n# - {name: period, unit: d, datatype: float64}\n"
                 "# - {name: duration, unit: h, datatype: float64}\n"
                 "name ra dec kind period duration\nH1 7.5 29.5 transit_host 3.0 2.4\nH2 7.5 99.0 variable 1.0 1.0\n")
    with pytest.raises(TableFileError, match=f"{f}:12: dec 99.0 is outside"):
        define_targets(campaign, f)
    f.write_text(f.read_text().replace("99.0", "29.6"))
    define_targets(campaign, f)
    h1 = records(campaign, "target")["H1"]
    assert h1["ra"] == pytest.approx(112.5) and h1["duration"] == pytest.approx(0.1) and h1["period"] == 3.0


def test_field_of_a_target_with_datasets_cannot_change(campaign, tmp_path):
    from astropy.table import Table

    f = tmp_path / "t.csv"
    f.write_text("name,ra,dec,kind\nT1,112.5,29.6,variable\n")
    define_targets(campaign, f)
    campaign.registry.sync_dimension_records("band", [{"name": "r"}])
    campaign.put(Table({"time": [1.0]}), DatasetType("lightcurve", ("target", "band"), "Table"),
                 {"target": "T1", "band": "r"}, run="lc")
    before = snapshot(campaign)
    f.write_text("name,ra,dec,kind,field\nT1,112.5,29.6,variable,far\n")
    with pytest.raises(ConflictError, match="cannot change its field from 'W12' to 'far': 1 registered dataset"):
        define_targets(campaign, f)
    assert snapshot(campaign) == before


def test_fields_from_exposure_pointings(butler):
    reg = butler.registry
    reg.sync_dimension_records("instrument", [{"name": "cam"}])
    reg.sync_dimension_records("band", [{"name": "r"}])
    reg.sync_dimension_records("field", [{"name": "M13"}, {"name": "unassigned"}, {"name": "known", "ra": 10.0,
                                                                                       "dec": 10.0}])
    exps = [(1, "M13", 250.40, 36.45), (2, "M13", 250.44, 36.47), (3, "M13", 252.0, 36.0),  # 3: a stray pointing
            (4, "unassigned", 83.82, -5.39), (5, "unassigned", 83.84, -5.40),            # a new field (M42)
            (6, "unassigned", 10.05, 10.0), (7, "known", 10.0, 10.0)]                   # points at 'known'
    reg.sync_dimension_records("exposure", [{"instrument": "cam", "id": i, "band": "r", "field": f, "ra": a, "dec": d}
                                            for i, f, a, d in exps])
    report = fields_from_exposures(butler, radius_deg=0.25)
    fields = records(butler, "field")
    assert fields["M13"]["ra"] == pytest.approx(250.42, abs=1e-3) and fields["M13"]["dec"] == pytest.approx(36.46, abs=1e-3)
    assert report.new_fields == ["F0535-0524"] and fields["F0535-0524"]["ra"] == pytest.approx(83.83, abs=1e-3)
    assert (fields["known"]["ra"], fields["known"]["dec"]) == (10.0, 10.0)
    assert any("1 of 3 exposures point more than 0.25 deg" in n for n in report.notes)
    assert any("point at field known" in n for n in report.notes)
    assert report.counts["field"] == {"inserted": 1, "updated": 1, "unchanged": 1}
    again = fields_from_exposures(butler, radius_deg=0.25)  # idempotent: the new field now takes its cluster
    assert again.new_fields == [] and again.counts["field"] == {"inserted": 0, "updated": 0, "unchanged": 2}
    assert len(records(butler, "field")) == 4


def test_helpers():
    assert position_name(250.4233, 36.4613) == "F1642+3628" and position_name(83.82, -5.39) == "F0535-0523"
    clusters = cluster_pointings([{"ra": 359.95, "dec": 0.0}, {"ra": 0.05, "dec": 0.0}, {"ra": 5.0, "dec": 0.0}], 0.2)
    assert [len(c.members) for c in clusters] == [2, 1]
    ra, dec = clusters[0].radec
    assert min(ra, 360 - ra) == pytest.approx(0.0, abs=1e-9) and dec == pytest.approx(0.0, abs=1e-9)
    fields = {"a": {"ra": 0.1, "dec": 0.0}, "b": {"ra": 359.7, "dec": 0.0}, "c": {"ra": None, "dec": None}}
    assert nearest_field(fields, 359.95, 0.0, 0.5) == "a" and nearest_field(fields, 180.0, 0.0, 0.5) is None


def _old_universe_text() -> str:
    """The packaged universe as it was at version 1: no target ephemeris (v2) nor stellar_mass (v3)."""
    text = DimensionUniverse.default().text
    gone = ("period", "epoch", "duration", "stellar_mass")
    for line in [ln for ln in text.splitlines() if ln.strip().split(":")[0] in gone]:
        text = text.replace(line + "\n", "")
    return text.replace(f"\nversion: {DimensionUniverse.default().version}\n", "\nversion: 1\n")


def test_repository_of_the_previous_universe_is_upgraded_on_open(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    old = DimensionUniverse(_old_universe_text())
    assert old.version == 1 and "period" not in old["target"].metadata
    reg = Registry.create(url, old)
    reg.sync_dimension_records("field", [{"name": "f", "ra": 1.0, "dec": 2.0}])
    reg.sync_dimension_records("target", [{"name": "t", "field": "f", "ra": 1.0, "dec": 2.0, "kind": "variable"}])
    reg.close()
    reopened = Registry(url)
    assert reopened.universe.version == DimensionUniverse.default().version
    assert {"period", "stellar_mass"} <= set(reopened.universe["target"].metadata)
    assert reopened.dimension_records("target")[0]["period"] is None  # old records: unknown
    counts = reopened.update_dimension_records("target", [{"name": "t", "period": 2.5}])
    assert counts == {"inserted": 0, "updated": 1, "unchanged": 0}
    reopened.close()
    assert Registry(url).dimension_records("target")[0]["period"] == 2.5  # stored text is the new universe


def test_custom_universe_is_kept_and_new_metadata_refused_in_one_line(tmp_path):
    custom = tmp_path / "custom.yaml"
    custom.write_text(_old_universe_text().replace("name: openastro", "name: mysurvey"))
    butler = Butler.create(tmp_path / "repo", universe=custom)
    assert butler.universe.name == "mysurvey" and "period" not in butler.universe["target"].metadata
    f = tmp_path / "t.csv"
    f.write_text("name,ra,dec,kind,period\nT1,10,10,variable,1.5\n")
    with pytest.raises(TableFileError) as info:
        define_targets(butler, f)
    assert str(info.value).count("\n") == 0 and "has no target period; leave those columns out" in str(info.value)
    f.write_text("name,ra,dec,kind\nT1,10,10,variable\n")
    assert define_targets(butler, f).counts["target"]["inserted"] == 1
