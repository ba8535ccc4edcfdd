"""Reference catalogues without code: files with foreign column names and other photometric systems become a
field's `refcat`; Gaia cones come from the cache offline; a missing catalogue is one line at plan time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from testdata import make_small_repo

from openastro_parsl.astro.refcat import GAIA_DR3, RefcatCache, Region, to_sdss
from openastro_parsl.errors import OpenAstroError
from openastro_parsl.graph.planner import Planner, PlanningError
from openastro_parsl.ingest.refcats import fetch_catalogue, read_catalogue, register_refcat
from openastro_parsl.ingest.tablefile import TableFileError
from openastro_parsl.pipeline.pipeline import load_pipeline

UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: nothing listens, the connection is refused at once


def vizier_csv(path: Path) -> Path:
    """A VizieR-like export around field demo1 (150.1, +2.2): Johnson B, V with their own column names."""
    path.write_text("# exported\nRAJ2000,DEJ2000,Seq,Bmag,e_Bmag,Vmag,e_Vmag,fld\n"
                    "150.10,2.20,11,12.65,0.02,12.00,0.01,demo1\n"     # line 3: B-V 0.65, a G2 star
                    "150.12,2.21,12,13.10,,12.90,0.02,demo1\n"          # line 4: no B error -> default
                    "150.08,2.19,13,16.50,0.05,14.50,0.03,demo1\n"      # line 5: B-V 2.0, outside
                    "150.11,2.18,14,,,13.00,0.02,demo1\n"               # line 6: no B
                    "10:00:24,+02:12:00,15,11.0,0.01,10.5,0.01,demo1\n"  # line 7: sexagesimal
                    "210.0,-5.0,16,x,0.01,10.5,0.01,other\n")           # another field (bad B, not ours)
    return path


def test_johnson_file_with_foreign_columns(tmp_path):
    got = read_catalogue(vizier_csv(tmp_path / "cat.csv"), "demo1", system="johnson",
                         columns="ra=RAJ2000,dec=DEJ2000,id=Seq,B=Bmag,B_err=e_Bmag,V=Vmag,V_err=e_Vmag,field=fld")
    t = got.table
    assert list(t["id"]) == [11, 12, 15]
    # Jester et al. 2005: g = V + 0.60 (B-V) - 0.12, r = V - 0.42 (B-V) + 0.11
    assert t["g"][0] == pytest.approx(12.0 + 0.6 * 0.65 - 0.12) and t["r"][0] == pytest.approx(12.0 - 0.42 * 0.65 + 0.11)
    assert t["g_err"][0] == pytest.approx(np.hypot(np.hypot(0.4 * 0.01, 0.6 * 0.02), 0.02))
    assert t["r_err"][1] == pytest.approx(np.sqrt((1.42 * 0.02) ** 2 + (0.42 * 0.05) ** 2 + 0.03 ** 2))  # default 0.05
    assert t["ra"][2] == pytest.approx(150.1) and t["dec"][2] == pytest.approx(2.2) and set(t["field"]) == {"demo1"}
    notes = " | ".join(got.notes)
    for part in ("kept the 5 rows of field demo1 (of 6)", "B_err: 1 empty, set to 0.05 mag",
                 "dropped 1 row(s) without B or V", "dropped 1 row(s) with B-V outside -0.2..1.5", "Jester"):
        assert part in notes


def test_gaia_and_johnson_agree_on_a_sun_like_star():
    """Two published relations, fitted on different stars, give the same g, r for the Sun within their scatter."""
    v, bv, bp_rp, g_minus_v = 10.0, 0.65, 0.82, -0.15  # solar colours (Casagrande & VandenBerg 2018)
    one = {k: np.array([0.001]) for k in ("B", "V", "G", "BP", "RP")}
    gj, rj, *_, ok_j = to_sdss("johnson", {"B": np.array([v + bv]), "V": np.array([v])}, one)
    gg, rg, gge, rge, ok_g = to_sdss("gaia", {"G": np.array([v + g_minus_v]), "BP": np.array([10.4]),
                                              "RP": np.array([10.4 - bp_rp])}, one)
    assert ok_j[0] and ok_g[0]
    assert abs(gj[0] - gg[0]) < np.hypot(0.02, 0.0745) and abs(rj[0] - rg[0]) < np.hypot(0.03, 0.03776)
    assert gg[0] - rg[0] == pytest.approx(0.44, abs=0.04)  # the Sun's g - r
    _, _, _, _, ok = to_sdss("gaia", {"G": np.array([10.0, 10.0]), "BP": np.array([10.1, 13.0]),
                                      "RP": np.array([10.0, 9.5])}, {k: np.array([0.01, 0.01]) for k in ("G", "BP", "RP")})
    assert list(ok) == [False, False]  # BP-RP 0.1 and 3.5: outside Riello et al.'s 0.3..3.0


@pytest.mark.parametrize("fmt", ["fits", "parquet"])
def test_binary_catalogues_name_bad_rows_by_row(tmp_path, fmt):
    t = Table({"ra": [150.1, 150.2, 400.0], "dec": [2.2, 2.3, 2.1], "gmag": [12.0, 13.0, 14.0],
               "rmag": [11.5, 12.4, 13.6], "e_g": [0.01, 0.02, 0.03], "e_r": [0.01, 0.02, 0.03]})
    path = tmp_path / f"cat.{fmt}"
    t.write(path, format=fmt)
    with pytest.raises(TableFileError, match=rf"{path}: row 3: ra 400.0 is outside \[0, 360\)"):
        read_catalogue(path, "demo1", columns="g=gmag,r=rmag,g_err=e_g,r_err=e_r")
    t["ra"][2] = 150.3
    t.write(path, format=fmt, overwrite=True)
    got = read_catalogue(path, "demo1", columns="g=gmag,r=rmag,g_err=e_g,r_err=e_r")
    assert list(got.table["id"]) == [1, 2, 3] and list(got.table["r_err"]) == [0.01, 0.02, 0.03]
    assert "no id column: rows numbered from 1" in got.notes


def test_bad_rows_listed_and_missing_columns_named(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("id,ra,dec,g,r,g_err\n1,150.1,2.2,12.0,11.5,0.01\n1,150.1,2.2,12.0,11.5,-0.1\n"
                    "2.5,abc,2.2,x,11.5,0.01\n")
    with pytest.raises(TableFileError) as info:
        read_catalogue(path, "demo1")
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: 2 bad row(s); nothing was written"
    assert lines[1:] == [f"{path}:3: g_err -0.1 is not positive", f"{path}:3: id 1 is already on {path}:2",
                         f"{path}:4: ra 'abc': neither degrees nor sexagesimal (hh:mm:ss)",
                         f"{path}:4: g 'x' is not a number", f"{path}:4: id '2.5' is not an integer"]
    with pytest.raises(TableFileError, match=r"no column for B, V .* --columns B=<column>,V=<column>"):
        read_catalogue(path, "demo1", system="johnson")


def test_register_replace_keeps_one_file_and_a_clean_datastore(tmp_path):
    butler = make_small_repo(tmp_path, refcat=False)
    first = read_catalogue(vizier_csv(tmp_path / "cat.csv"), "demo1", system="johnson",
                           columns="ra=RAJ2000,dec=DEJ2000,B=Bmag,V=Vmag,field=fld").table
    done = register_refcat(butler, first, "demo1")
    assert done.chain == ["raw/all", "refcats"] and done.replaced == 0
    assert butler.registry.resolve_collections("defaults") == ["raw/all", "refcats"]
    with pytest.raises(OpenAstroError, match="already has a refcat in run 'refcats' .*pass --replace"):
        register_refcat(butler, first[:1], "demo1")
    again = register_refcat(butler, first[:2], "demo1", replace=True)
    assert again.replaced == 1 and again.chain == ["raw/all", "refcats"]
    files = [p for p in (butler.root / "refcats").rglob("*") if p.is_file()]
    assert files == [butler.path(again.ref)]  # no old file, no temporary left behind
    assert len(butler.get("refcat", {"field": "demo1"}, collections="defaults")) == 2
    assert butler.verify() == (7, [])
    with pytest.raises(OpenAstroError, match="field 'nowhere' is not defined .*define-fields"):
        register_refcat(butler, first, "nowhere")


def test_failed_replace_restores_the_old_file_and_rows(tmp_path, monkeypatch):
    butler = make_small_repo(tmp_path, refcat=False)
    table = Table({"id": [1, 2], "ra": [150.1, 150.2], "dec": [2.2, 2.3], "g": [12.0, 13.0], "r": [11.5, 12.5],
                   "g_err": [0.01, 0.01], "r_err": [0.01, 0.01]})
    old = register_refcat(butler, table, "demo1").ref
    before = butler.path(old).read_bytes()
    real = butler.registry.set_chain

    def broken(*a, **k):  # the last registry write fails: everything must roll back
        raise OSError("disk went away")

    monkeypatch.setattr(butler.registry, "set_chain", broken)
    with pytest.raises(OSError, match="disk went away"):
        register_refcat(butler, table[:1], "demo1", replace=True)
    monkeypatch.setattr(butler.registry, "set_chain", real)
    assert [r.id for r in butler.registry.query_datasets("refcat", "refcats")] == [old.id]
    assert butler.path(old).read_bytes() == before and butler.verify()[1] == []
    assert [p.name for p in butler.path(old).parent.iterdir()] == [butler.path(old).name]


def cached_cone(cache_path: Path, ra=150.1, dec=2.2, radius=0.5) -> None:
    rng = np.random.default_rng(3)
    n = 40
    stars = Table({"id": np.arange(1, n + 1), "ra": ra + rng.uniform(-0.3, 0.3, n),
                   "dec": dec + rng.uniform(-0.3, 0.3, n), "g": rng.uniform(12, 17, n), "r": rng.uniform(11, 16, n),
                   "g_err": np.full(n, 0.01), "r_err": np.full(n, 0.01), "sel_mag": rng.uniform(11, 17, n)})
    RefcatCache(cache_path).put(GAIA_DR3, Region(ra, dec, radius), 17.65, stars)


def test_fetch_answers_from_the_cache_offline_and_when_the_archive_is_unreachable(tmp_path):
    butler = make_small_repo(tmp_path, refcat=False)
    cache = tmp_path / "cache.sqlite"
    with pytest.raises(OpenAstroError, match=f"not in the cache {cache} and the archive unreachable"):
        fetch_catalogue(butler, "demo1", cache=cache, server=UNREACHABLE)
    with pytest.raises(OpenAstroError, match="fetching is off"):
        fetch_catalogue(butler, "demo1", cache=cache, offline=True)
    cached_cone(cache)
    got = fetch_catalogue(butler, "demo1", cache=cache, offline=True)
    assert got.notes == [f"offline: from cache {cache}"] and 0 < len(got.table) <= 40
    assert set(got.table["field"]) == {"demo1"}
    refreshed = fetch_catalogue(butler, "demo1", cache=cache, refresh=True, server=UNREACHABLE)
    assert refreshed.notes[0].startswith(f"offline: from cache {cache} (archive unreachable (")
    assert fetch_catalogue(butler, "demo1", cache=cache).notes[0].startswith(f"from cache {cache}")
    butler.registry.sync_dimension_records("field", [{"name": "nocentre"}])
    with pytest.raises(OpenAstroError, match="field 'nocentre' has no centre"):
        fetch_catalogue(butler, "nocentre", cache=cache, offline=True)


def test_missing_catalogue_is_one_line_per_field_naming_the_command(tmp_path):
    butler = make_small_repo(tmp_path, refcat=False)
    (tmp_path / "two.yaml").write_text(  # two tasks read the field's catalogue; only plateSolve's connection hints
        "tasks:\n  plateSolve: {class: openastro_parsl.tasks.astrometry.PlateSolveTask}\n"
        "  targetCoverage: {class: openastro_parsl.tasks.qa.TargetCoverageTask}\n")
    pipeline = load_pipeline(str(tmp_path / "two.yaml"))
    with pytest.raises(PlanningError) as info:
        Planner(butler, pipeline, inputs=["defaults"], output_run="u/t/one").plan()
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and lines[0].startswith("missing prerequisite inputs")
    assert lines[1] == (f"  refcat {{field='demo1'}} needed by tasks 'plateSolve', 'targetCoverage': none found; add it "
                        f"with `openastro-butler ingest-refcat {butler.root} FILE --field demo1` or "
                        f"`openastro-butler fetch-refcat {butler.root} --field demo1`")
    cached_cone(tmp_path / "c.sqlite")
    register_refcat(butler, fetch_catalogue(butler, "demo1", cache=tmp_path / "c.sqlite", offline=True).table, "demo1")
    graph = Planner(butler, pipeline, inputs=["defaults"], output_run="u/t/one").plan()
    assert sorted({q.task for q in graph.quanta.values()}) == ["plateSolve", "targetCoverage"]


def test_real_gaia_file_with_signal_to_noise_columns():
    """The real Gaia DR3 M67 file carries flux-over-error, not magnitude errors: `G_snr=` turns them into
    1.0857 / snr, and the catalogue's own G, BP, RP stay beside the derived g, r (band_map may use them)."""
    path = Path(__file__).resolve().parents[1] / "data" / "real" / "m67_gaia_dr3_members.csv"
    cols = ("id=source_id,G=phot_g_mean_mag,BP=phot_bp_mean_mag,RP=phot_rp_mean_mag,G_snr=phot_g_mean_flux_over_error,"
            "BP_snr=phot_bp_mean_flux_over_error,RP_snr=phot_rp_mean_flux_over_error")
    got = read_catalogue(path, "M67", system="gaia", columns=cols)
    raw = Table.read(path, format="ascii.csv")
    t = got.table
    assert len(t) == 1486 and {"G", "BP", "RP", "G_err", "BP_err", "RP_err"} <= set(t.colnames)
    row = raw[raw["source_id"] == t["id"][0]][0]
    assert t["G_err"][0] == pytest.approx(2.5 / np.log(10) / row["phot_g_mean_flux_over_error"])
    assert t["G"][0] == pytest.approx(row["phot_g_mean_mag"])
    assert any("G_err = 1.0857 / phot_g_mean_flux_over_error" in n for n in got.notes)
    assert not any("--default-error" in n for n in got.notes)
